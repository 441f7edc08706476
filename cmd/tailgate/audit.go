package main

import (
	"fmt"
	"io"
	"os"

	"github.com/tailgate-dev/tailgate/gateway/audit"
)

// auditCommand is `tailgate audit verify FILE...`: each file's records
// are checked against their hashes, each against the one before, and each
// file against the last record of the file before it (oldest first: the
// rotated files, then the current one), so a record or a whole file
// removed, inserted or edited is found and named.
func auditCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) < 2 || args[0] != "verify" {
		fmt.Fprintln(stderr, "usage: tailgate audit verify FILE... (oldest first)")
		return exitConfig
	}
	prev, total := "", 0
	for _, file := range args[1:] {
		f, err := os.Open(file)
		if err != nil {
			fmt.Fprintln(stderr, "tailgate audit:", err)
			return exitConfig
		}
		res, err := audit.Verify(f, prev)
		f.Close()
		if err != nil {
			fmt.Fprintf(stderr, "tailgate audit: %s: %v\n", file, err)
			return exitConfig
		}
		fmt.Fprintf(stdout, "%s: %d records, chain intact\n", file, res.Records)
		prev, total = res.Last, total+res.Records
	}
	fmt.Fprintf(stdout, "ok: %d records\n", total)
	return exitOK
}
