// Command orchestratord is the edge daemon: subcommands serve (default),
// check-config, token, check-token, default-config and version. It alone
// knows every package and wires them with constructors.
//
// Exit codes: 0 success (and --help), 1 a runtime error (a bad config, a
// refused token, a daemon that could not start), 2 a usage error (unknown
// command or flag, missing or extra argument, a flag value out of range).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/orchestratord/orchestratord/daemon/auth"
	"github.com/orchestratord/orchestratord/daemon/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// command is one subcommand.
type command struct {
	name     string
	synopsis string // its arguments, for "usage: orchestratord <name> <synopsis>"
	summary  string // one line for the command list
	about    string // a paragraph for its own --help
	run      func(c *cli, args []string) error
}

// commands lists the subcommands in the order --help shows them.
func commands() []command {
	return []command{
		{"serve", "[--config FILE] [--listen ADDR] [--admin ADDR] [--log-level LEVEL]",
			"run the daemon (the default command)",
			"Run the daemon until SIGTERM or SIGINT (a graceful drain); SIGHUP reloads the config.",
			(*cli).serve},
		{"check-config", "[--config FILE]",
			"validate a config file and print the effective config",
			"Load and validate a config file (environment overrides applied) and print the\neffective configuration with every default, secrets left out.",
			(*cli).checkConfig},
		{"token", "--sub USER [--ttl DURATION] [--config FILE]",
			"print a test JWT signed with the configured HS256 key",
			"Print an HS256 JWT for USER signed with the key named by auth.jwt.secret_env,\nwith the configured issuer and audience.",
			(*cli).token},
		{"check-token", "[--config FILE] TOKEN",
			"verify a JWT as the handshake would: its claims, or why it is refused",
			"Verify TOKEN (\"-\" reads it from stdin) exactly as a WebSocket handshake would:\nprint its claims when accepted (exit 0), or the reason it is refused (exit 1).",
			(*cli).checkToken},
		{"default-config", "",
			"print a commented starter config file",
			"Print a commented starter config file, every key with its default;\n\"check-config\" accepts it once the HS256 key variable is set.",
			(*cli).defaultConfig},
		{"version", "",
			"print the version (also --version)",
			"Print the version.",
			(*cli).version},
	}
}

func findCommand(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// usage is the top-level help: the subcommands.
func usage() string {
	var b strings.Builder
	b.WriteString("usage: orchestratord [command] [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(&b, "  %-15s %s\n", c.name, c.summary)
	}
	b.WriteString(`
Flags:
  -h, --help      show this help
  --version       print the version

Run "orchestratord <command> --help" for the flags of a command.
Exit codes: 0 ok, 1 error, 2 usage error.
`)
	return b.String()
}

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// cli is one invocation: its environment and streams.
type cli struct {
	env    []string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	cmd    command // the command being run
	fs     *flag.FlagSet
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main's testable entry point: it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	return (&cli{env: os.Environ(), stdin: os.Stdin, stdout: stdout, stderr: stderr}).main(args)
}

func (c *cli) main(args []string) int {
	name := "serve"
	if len(args) > 0 {
		switch a := args[0]; a {
		case "-h", "-help", "--help", "help":
			if a == "help" && len(args) > 1 {
				cmd, ok := findCommand(args[1])
				if !ok {
					fmt.Fprintf(c.stderr, "orchestratord: unknown command %q\n\n%s", args[1], usage())
					return exitUsage
				}
				c.cmd = cmd
				c.fs = c.newFlags()
				_ = cmd.run(c, []string{"--help"})
				return exitOK
			}
			fmt.Fprint(c.stdout, usage())
			return exitOK
		case "-version", "--version":
			args = append([]string{"version"}, args[1:]...)
		}
		if !strings.HasPrefix(args[0], "-") {
			name, args = args[0], args[1:]
		}
	}
	cmd, ok := findCommand(name)
	if !ok {
		fmt.Fprintf(c.stderr, "orchestratord: unknown command %q\n\n%s", name, usage())
		return exitUsage
	}
	c.cmd = cmd
	c.fs = c.newFlags()
	err := cmd.run(c, args)
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "orchestratord %s: %v\nusage: %s\nRun \"orchestratord %s --help\" for its flags.\n",
			cmd.name, err, c.synopsis(), cmd.name)
		return exitUsage
	default:
		fmt.Fprintf(c.stderr, "orchestratord %s: %v\n", cmd.name, err)
		return exitError
	}
}

func (c *cli) synopsis() string {
	return strings.TrimSpace("orchestratord " + c.cmd.name + " " + c.cmd.synopsis)
}

// newFlags returns the command's empty flag set. Its messages are
// discarded: parse reports errors itself, and --help prints to stdout.
func (c *cli) newFlags() *flag.FlagSet {
	fs := flag.NewFlagSet(c.cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parse parses the command's flags, allowing them before and after the
// positional arguments, which it returns. --help prints the command's
// usage and its flags only, and returns flag.ErrHelp. A flag error is a
// usage error.
func (c *cli) parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := c.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				c.help()
				return nil, flag.ErrHelp
			}
			return nil, usagef("%v", err)
		}
		args = c.fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// help prints the command's usage, what it does and its own flags.
func (c *cli) help() {
	fmt.Fprintf(c.stdout, "usage: %s\n\n%s\n", c.synopsis(), c.cmd.about)
	n := 0
	c.fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprint(c.stdout, "\nFlags:\n")
		c.fs.SetOutput(c.stdout)
		c.fs.PrintDefaults()
		c.fs.SetOutput(io.Discard)
	}
}

// noArgs parses a command that takes flags only.
func (c *cli) noArgs(args []string) error {
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	return nil
}

// defaultConfigPath is used when --config is not given and the file exists.
const defaultConfigPath = "/etc/orchestratord/config.yaml"

// source is how a command finds its config: --config and, for serve, the
// flags that override keys.
type source struct {
	config   string
	listen   string
	admin    string
	logLevel string
	env      []string
}

func (c *cli) configFlag(s *source) {
	s.env = c.env
	c.fs.StringVar(&s.config, "config", "", `config file, or "demo" for the embedded demo config (default `+defaultConfigPath+`)`)
}

// load reads the config with flag overrides applied last.
func (s *source) load() (config.Config, string, error) {
	path := s.config
	if path == "" {
		if _, err := os.Stat(defaultConfigPath); err != nil {
			return config.Config{}, "", fmt.Errorf("no --config given and %s does not exist (use --config demo for the embedded demo, or default-config for a starter file)", defaultConfigPath)
		}
		path = defaultConfigPath
	}
	env := append([]string(nil), s.env...)
	if s.listen != "" {
		env = append(env, config.EnvPrefix+"LISTEN_CLIENT="+s.listen)
	}
	if s.admin != "" {
		env = append(env, config.EnvPrefix+"LISTEN_ADMIN="+s.admin)
	}
	if s.logLevel != "" {
		env = append(env, config.EnvPrefix+"LOG_LEVEL="+s.logLevel)
	}
	cfg, err := config.Load(path, env)
	return cfg, path, err
}

func (c *cli) serve(args []string) error {
	var s source
	c.configFlag(&s)
	c.fs.StringVar(&s.listen, "listen", "", "override listen.client")
	c.fs.StringVar(&s.admin, "admin", "", "override listen.admin")
	c.fs.StringVar(&s.logLevel, "log-level", "", "override log.level")
	if err := c.noArgs(args); err != nil {
		return err
	}
	cfg, path, err := s.load()
	if err != nil {
		return err
	}
	return serve(context.Background(), cfg, func() (config.Config, error) {
		next, _, err := s.load()
		return next, err
	}, path, c.stdout, nil)
}

func (c *cli) checkConfig(args []string) error {
	var s source
	c.configFlag(&s)
	if err := c.noArgs(args); err != nil {
		return err
	}
	cfg, path, err := s.load()
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%s: ok\n%s\n", path, cfg.JSON())
	return nil
}

func (c *cli) token(args []string) error {
	var s source
	c.configFlag(&s)
	sub := c.fs.String("sub", "", "subject (user id), required")
	ttl := c.fs.Duration("ttl", time.Hour, "lifetime of the token, positive (the token's exp is now + ttl)")
	if err := c.noArgs(args); err != nil {
		return err
	}
	if *sub == "" {
		return usagef("--sub is required")
	}
	if *ttl <= 0 {
		return usagef("--ttl must be positive, got %s (a token without exp would never expire)", *ttl)
	}
	cfg, _, err := s.load()
	if err != nil {
		return err
	}
	if cfg.Auth.JWT.Secret == "" {
		return fmt.Errorf("no HS256 key: set %s", cfg.Auth.JWT.SecretEnv)
	}
	tok, err := auth.Mint([]byte(cfg.Auth.JWT.Secret), *sub, *ttl, cfg.Auth.JWT.Issuer, cfg.Auth.JWT.Audience)
	if err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, tok)
	return nil
}

func (c *cli) checkToken(args []string) error {
	var s source
	c.configFlag(&s)
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) == 0:
		return usagef("a TOKEN argument is required (\"-\" reads it from stdin)")
	case len(pos) > 1:
		return usagef("one TOKEN expected, got %d arguments", len(pos))
	}
	tok := pos[0]
	if tok == "-" {
		line, err := bufio.NewReader(io.LimitReader(c.stdin, 1<<20)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read token from stdin: %w", err)
		}
		tok = line
	}
	cfg, _, err := s.load()
	if err != nil {
		return err
	}
	return checkToken(context.Background(), cfg, strings.TrimSpace(tok), c.stdout, c.stderr)
}

func (c *cli) defaultConfig(args []string) error {
	if err := c.noArgs(args); err != nil {
		return err
	}
	_, err := c.stdout.Write(config.StarterYAML())
	return err
}

func (c *cli) version(args []string) error {
	if err := c.noArgs(args); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "orchestratord %s\n", version)
	return nil
}
