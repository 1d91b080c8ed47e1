// Command imctl is HubuIM's command-line client: it connects as a device
// (listen, send, sync, read) through the Go SDK and calls logic's HTTP APIs
// (push, online counts, node list, groups). With no flags it talks to the
// standalone mode on its default ports.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Defaults point at `make run` (cmd/hubuim).
const (
	defaultComet = "127.0.0.1:3101"
	defaultLogic = "http://127.0.0.1:3111"
)

const usage = `imctl: HubuIM command-line client

usage: imctl <command> [flags] [args]

device commands (a long connection through the SDK):
  listen   connect and print every push and message until interrupted
  send     send a message to a user (-to) or a group (-group) and print the ACK
  sync     pull a conversation (-conv) or everything that moved
  read     mark a conversation read up to a seq

business API commands (logic HTTP, goim-compatible):
  push     push to keys, mids, a room or all:  push keys|mids|room|all ...
  online   online counts:                      online total|room|top
  nodes    the node list a client would get

group commands (logic client HTTP API, as -mid):
  group    create|add|remove|members|list

Run "imctl <command> -h" for the flags of a command.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "imctl:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "help" || args[0] == "--help" {
		fmt.Fprint(out, usage)
		return nil
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "listen":
		return cmdListen(ctx, rest, out)
	case "send":
		return cmdSend(ctx, rest, out)
	case "sync":
		return cmdSync(ctx, rest, out)
	case "read":
		return cmdRead(ctx, rest, out)
	case "push":
		return cmdPush(ctx, rest, out)
	case "online":
		return cmdOnline(ctx, rest, out)
	case "nodes":
		return cmdNodes(ctx, rest, out)
	case "group":
		return cmdGroup(ctx, rest, out)
	}
	return fmt.Errorf("unknown command %q (try imctl help)", cmd)
}

// splitList splits "a,b,c" and drops empty parts.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
