package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/spf13/cobra"
)

func (a *app) webhookCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "webhook",
		Short: "Send signed test deliveries to a ledger endpoint",
	}
	var (
		url, userID, email, first, last, username, deliveryID string
		phoneOnly                                             bool
	)
	send := &cobra.Command{
		Use:   "send TYPE",
		Short: "Build a realistic Clerk event, sign it as Svix does, POST it and print the answer",
		Long: `send builds a realistic Clerk webhook payload of TYPE (` + strings.Join(clerkgen.EventTypes, ", ") + `),
signs it with the first CLERK_WEBHOOK_SIGNING_SECRET exactly as Svix does
(svix-id, svix-timestamp, svix-signature), POSTs it to the endpoint and prints
the status and body of the answer. It exits non-zero unless the answer is 2xx.
Sending the same --delivery-id twice shows how a redelivery with another body
is handled (each send builds its body anew, with new timestamps): answered 200
"duplicate" with "conflict":true, the first body kept.`,
		Example: `  ledger webhook send user.created --user-id user_123 --email ada@example.com --first-name Ada --last-name Lovelace
  ledger webhook send user.deleted --user-id user_123`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig(cmd)
			if err != nil {
				return err
			}
			if len(cfg.WebhookSecrets) == 0 {
				return domain.Errorf(domain.EINVALID, "CLERK_WEBHOOK_SIGNING_SECRET is not set (ledger dev prints the one it generated)")
			}
			signer, err := clerkgen.NewSigner(cfg.WebhookSecrets[0])
			if err != nil {
				return domain.Errorf(domain.EINVALID, "CLERK_WEBHOOK_SIGNING_SECRET is malformed")
			}
			if url == "" {
				url = "http://" + cfg.Addr + "/api/webhooks/clerk"
			}
			now := time.Now()
			if userID == "" {
				userID = clerkgen.NewID("user")
			}
			if email == "" && !phoneOnly {
				email = "ada@example.com"
			}
			u := clerkgen.User{ID: userID, Email: email, FirstName: first, LastName: last, Username: username}
			if phoneOnly {
				u.Phone = "+15555550100"
			}
			body, err := clerkgen.Event(args[0], u, now)
			if err != nil {
				return domain.Errorf(domain.EINVALID, "%v", err)
			}
			if deliveryID == "" {
				deliveryID = clerkgen.NewID("msg")
			}
			req, err := http.NewRequestWithContext(cmd.Context(), http.MethodPost, url, bytes.NewReader(body))
			if err != nil {
				return domain.Errorf(domain.EINVALID, "--url %q: %v", url, err)
			}
			req.Header = signer.Headers(deliveryID, now, body)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("post %s: %w", url, err)
			}
			defer res.Body.Close()
			answer, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
			fmt.Fprintf(a.stdout, "POST %s\n%s %s user %s -> %s\n%s", url, deliveryID, args[0], userID, res.Status, answer)
			if res.StatusCode/100 != 2 {
				return exitCode(1)
			}
			return nil
		},
	}
	send.Flags().StringVar(&url, "url", "", "endpoint (default http://LEDGER_ADDR/api/webhooks/clerk)")
	send.Flags().StringVar(&userID, "user-id", "", "Clerk user id (default: a new user_...)")
	send.Flags().StringVar(&email, "email", "", "primary email (default ada@example.com)")
	send.Flags().BoolVar(&phoneOnly, "phone-only", false, "a user with a phone number and no email")
	send.Flags().StringVar(&first, "first-name", "", "first name (default none: null)")
	send.Flags().StringVar(&last, "last-name", "", "last name (default none: null)")
	send.Flags().StringVar(&username, "username", "", "username (default none: null)")
	send.Flags().StringVar(&deliveryID, "delivery-id", "", "svix-id (default: a new msg_...); repeat one to redeliver")
	send.Flags().String("addr", "", "service address (overrides LEDGER_ADDR)")
	send.Flags().String("webhook-secret", "", "signing secret (overrides CLERK_WEBHOOK_SIGNING_SECRET)")
	cmd.AddCommand(send)
	return cmd
}
