package main

// Temporary wiring while the first commands land; each is replaced by its own file.

import (
	"errors"

	"github.com/spf13/cobra"
)

func newDoctorCmd(*globalOptions) *cobra.Command {
	return &cobra.Command{Use: "doctor", RunE: func(*cobra.Command, []string) error { return errors.New("doctor: not built yet") }}
}
