// Command ledger is clerk-ledger's one binary: the webhook service, the
// projectors, migrations and the operators' and auditors' tools.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		var ec exitCode
		if errors.As(err, &ec) {
			os.Exit(int(ec))
		}
		fmt.Fprintln(os.Stderr, "ledger:", err)
		os.Exit(1)
	}
}
