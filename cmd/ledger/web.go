package main

import (
	"log/slog"
	"net"

	"github.com/clerk-ledger/clerk-ledger/clerksession"
)

// webAuth builds what the web pages need to sign people in, for a server
// listening on addr (the bound address, host:port).
//
// With CLERK_JWT_KEY or CLERK_SECRET_KEY it returns the Clerk session
// verifier (azp checked against CLERK_AUTHORIZED_PARTIES, default the
// server's own origin; issuer pinned by PUBLIC_CLERK_PUBLISHABLE_KEY). With
// neither and dev set (ledger dev), it returns the dev sign-in and a verifier
// for its tokens; NewDev refuses a non-loopback addr. With neither and
// not dev, nobody can sign in: both are nil and a warning is logged.
// Errors: EINVALID for a malformed key, publishable key or origin.
func webAuth(log *slog.Logger, cfg config, addr string, dev bool) (*clerksession.Verifier, *clerksession.Dev, error) {
	if cfg.PublishableKey != "" {
		if _, err := clerksession.FrontendAPIHost(cfg.PublishableKey); err != nil {
			return nil, nil, err
		}
	}
	if cfg.ClerkJWTKey == "" && cfg.ClerkSecretKey == "" {
		if !dev {
			log.Warn("sign-in disabled: set CLERK_JWT_KEY (or CLERK_SECRET_KEY) and PUBLIC_CLERK_PUBLISHABLE_KEY")
			return nil, nil, nil
		}
		ds, err := clerksession.NewDev(clerksession.DevConfig{
			Addr: addr, ClerkSecretKey: cfg.ClerkSecretKey, ClerkJWTKey: cfg.ClerkJWTKey, PublishableKey: cfg.PublishableKey,
		})
		if err != nil {
			return nil, nil, err
		}
		sessions, err := clerksession.NewVerifier(ds.Config())
		if err != nil {
			return nil, nil, err
		}
		log.Warn("DEV SIGN-IN ENABLED: sessions are minted by this process, not Clerk", "url", "http://"+addr+"/dev/sign-in")
		return sessions, ds, nil
	}
	if dev {
		log.Info("dev sign-in off: Clerk keys are configured, sign in with Clerk")
	}
	parties := cfg.AuthorizedParties
	if len(parties) == 0 {
		origin := cfg.Addr // names the host people open, unless it asks for any port
		if _, port, _ := net.SplitHostPort(origin); port == "0" {
			origin = addr
		}
		var err error
		if parties, err = clerksession.DefaultAuthorizedParties(origin); err != nil {
			return nil, nil, err
		}
	}
	sessions, err := clerksession.NewVerifier(clerksession.Config{
		JWTKey:            cfg.ClerkJWTKey,
		SecretKey:         cfg.ClerkSecretKey,
		PublishableKey:    cfg.PublishableKey,
		AuthorizedParties: parties,
	})
	if err != nil {
		return nil, nil, err
	}
	mode := "jwks"
	if cfg.ClerkJWTKey != "" {
		mode = "jwt_key"
	}
	log.Info("sign-in with Clerk", "verification", mode, "authorized_parties", parties)
	return sessions, nil, nil
}
