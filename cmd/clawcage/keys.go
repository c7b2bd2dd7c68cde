package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/clawcage/clawcage/internal/router/admin"
	"github.com/clawcage/clawcage/internal/vault"
)

func newKeysCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage model provider keys in the privacy router's vault",
		Long: `Provider keys live only in the privacy router, sealed in its vault. These
commands talk to the running router over its admin socket
(<state>/router/admin.sock). Secrets are read from standard input, never
from the command line, and are never shown again: list prints ids and
fingerprints only.`,
	}
	cmd.AddCommand(newKeysSetCmd(g), newKeysListCmd(g), newKeysRmCmd(g), newKeysRotateCmd(g))
	return cmd
}

func newKeysSetCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "set PROVIDER",
		Short: "Store a provider key read from standard input",
		Long: `Store a key for PROVIDER (a provider name from the config). The secret is
read from standard input: piped (one trailing newline is dropped) or, on a
terminal, typed without echo. A provider can hold several keys; the router
rotates through them.

  clawcage keys set anthropic < anthropic.key`,
		Args: func(_ *cobra.Command, args []string) error {
			switch {
			case len(args) == 0:
				return errors.New("keys set: missing PROVIDER (usage: clawcage keys set PROVIDER < key.txt)")
			case len(args) > 1:
				// Never echo the extra arguments: one of them is likely the secret.
				return fmt.Errorf("keys set takes exactly one argument, PROVIDER, and got %d: the secret is read from standard input, never from the command line (ps and shell history would see it); use: clawcage keys set %s < key.txt", len(args), safeProvider(args[0]))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			provider := args[0]
			if err := vault.ValidateProvider(provider); err != nil {
				return err
			}
			secret, err := readSecret(cmd.Context(), cmd.InOrStdin(), cmd.ErrOrStderr(), provider)
			defer clear(secret)
			if err != nil {
				return err
			}
			if err := vault.ValidateSecret(secret); err != nil {
				return fmt.Errorf("keys set %s: %w", provider, err)
			}
			c := admin.Dial(g.stateDir)
			defer c.Close()
			info, err := c.SetKey(cmd.Context(), provider, secret)
			if err != nil {
				return fmt.Errorf("keys set %s: %w", provider, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "stored %s key %s (fingerprint %s)\n", info.Provider, info.ID, info.Fingerprint)
			return nil
		},
	}
	// Flag errors would echo the offending argument, which may be the secret.
	cmd.SetFlagErrorFunc(func(*cobra.Command, error) error {
		return errors.New("keys set: unknown flag (arguments are not echoed); the secret is read from standard input only: clawcage keys set PROVIDER < key.txt")
	})
	return cmd
}

// safeProvider returns name if it is a valid provider name, else a placeholder.
func safeProvider(name string) string {
	if vault.ValidateProvider(name) != nil {
		return "PROVIDER"
	}
	return name
}

// readSecret reads the secret from in: without echo from a terminal, else
// all of it, dropping one trailing newline. Empty input is refused.
func readSecret(ctx context.Context, in io.Reader, prompt io.Writer, provider string) ([]byte, error) {
	if f, ok := in.(*os.File); ok && isTerminal(f) {
		fmt.Fprintf(prompt, "Secret for %s (input hidden): ", provider)
		secret, err := readNoEcho(ctx, f)
		fmt.Fprintln(prompt)
		if err != nil {
			return nil, err
		}
		if len(secret) == 0 {
			return nil, errors.New("keys set: empty secret; type or paste the key, or pipe it: clawcage keys set " + provider + " < key.txt")
		}
		return secret, nil
	}
	// One fixed buffer (no growing copies left behind); the caller zeroes it.
	buf := make([]byte, vault.MaxSecretLen+3)
	n, err := io.ReadFull(in, buf)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		clear(buf)
		return nil, fmt.Errorf("keys set: read secret from standard input: %w", err)
	}
	buf = buf[:n]
	if len(buf) > vault.MaxSecretLen+2 {
		clear(buf)
		return nil, fmt.Errorf("keys set: standard input holds more than %d bytes: not a provider key", vault.MaxSecretLen)
	}
	secret := trimNewline(buf)
	if len(secret) == 0 {
		return nil, errors.New("keys set: empty secret on standard input; pipe the key in: clawcage keys set " + provider + " < key.txt")
	}
	return secret, nil
}

// trimNewline drops one trailing "\n" or "\r\n".
func trimNewline(b []byte) []byte {
	if n, ok := bytes.CutSuffix(b, []byte("\n")); ok {
		b = n
		if n, ok := bytes.CutSuffix(b, []byte("\r")); ok {
			b = n
		}
	}
	return b
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// readNoEcho reads one line from the terminal f with echo off, restoring
// the terminal afterwards, also when ctx is cancelled (Ctrl-C).
func readNoEcho(ctx context.Context, f *os.File) ([]byte, error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("keys set: read terminal settings: %w", err)
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ISIG
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return nil, fmt.Errorf("keys set: turn terminal echo off: %w", err)
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)

	type result struct {
		line []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		// Preallocated so appends never leave copies behind.
		line := make([]byte, 0, vault.MaxSecretLen+2)
		var b [1]byte
		for len(line) <= vault.MaxSecretLen {
			n, err := f.Read(b[:])
			if n == 1 {
				if b[0] == '\n' {
					break
				}
				line = append(line, b[0])
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				clear(line)
				done <- result{nil, err}
				return
			}
		}
		done <- result{trimNewline(append(line, '\n')), nil}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("keys set: read secret from terminal: %w", r.err)
		}
		return r.line, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("keys set: %w", ctx.Err())
	}
}

func newKeysListCmd(g *globalOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List stored keys (ids and fingerprints, never secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := admin.Dial(g.stateDir)
			defer c.Close()
			keys, err := c.ListKeys(cmd.Context())
			if err != nil {
				return fmt.Errorf("keys list: %w", err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if keys == nil {
					keys = []vault.KeyInfo{}
				}
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(keys)
			}
			if len(keys) == 0 {
				fmt.Fprintln(out, "no keys stored; add one with: clawcage keys set PROVIDER < key.txt")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PROVIDER\tID\tFINGERPRINT\tCREATED")
			for _, k := range keys {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Provider, k.ID, k.Fingerprint, k.Created.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newKeysRmCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "rm PROVIDER [ID]",
		Short: "Remove one key of a provider, or all of them",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			provider, id := args[0], ""
			if len(args) == 2 {
				id = args[1]
			}
			c := admin.Dial(g.stateDir)
			defer c.Close()
			removed, err := c.RemoveKey(cmd.Context(), provider, id)
			if err != nil {
				return fmt.Errorf("keys rm: %w", err)
			}
			for _, k := range removed {
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s key %s (fingerprint %s)\n", k.Provider, k.ID, k.Fingerprint)
			}
			return nil
		},
	}
}

func newKeysRotateCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "rotate-master",
		Short: "Re-seal every stored key under a new vault master key",
		Long: `Generate a new vault master key and re-seal every stored key under it (the
keys themselves do not change; their fingerprints do, being keyed by the
master key). Use it when a copy of master.key may have leaked. The steps
are crash-safe: the router always restarts with a working vault.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := admin.Dial(g.stateDir)
			defer c.Close()
			keys, err := c.RotateMasterKey(cmd.Context())
			if err != nil {
				return fmt.Errorf("keys rotate-master: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "master key rotated; %d keys re-sealed\n", len(keys))
			for _, k := range keys {
				fmt.Fprintf(cmd.OutOrStdout(), "  %s key %s: new fingerprint %s\n", k.Provider, k.ID, k.Fingerprint)
			}
			return nil
		},
	}
}
