package main

import "errors"

// exitCoder is an error that carries the process exit status to use,
// such as the exit status of a sandboxed command. Its message, if any, has
// already been shown.
type exitCoder interface {
	error
	ExitCode() int
}

// exitError makes the process exit with code without printing anything more.
type exitError struct{ code int }

func (e exitError) Error() string { return "exit status" }
func (e exitError) ExitCode() int { return e.code }

func asExitCoder(err error, target *exitCoder) bool { return errors.As(err, target) }
