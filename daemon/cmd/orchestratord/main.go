// Command orchestratord is the edge daemon: subcommands serve (default),
// check-config, token and version. It alone knows every package and wires
// them with constructors.
package main

import (
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

const usage = `usage: orchestratord [serve|check-config|token|version] [flags]

  serve         run the daemon (default)
  check-config  load and validate a config file, print the effective config
  token         print an HS256 JWT signed with the configured key
  version       print the version

Run "orchestratord <command> -h" for the flags of a command.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serveCmd(args, stdout, stderr)
	case "check-config":
		err = checkConfigCmd(args, stdout, stderr)
	case "token":
		err = tokenCmd(args, stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "orchestratord %s\n", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "orchestratord: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "orchestratord %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

// defaultConfigPath is used when --config is not given and the file exists.
const defaultConfigPath = "/etc/orchestratord/config.yaml"

// common are the flags every config-reading command takes.
type common struct {
	config   string
	listen   string
	admin    string
	logLevel string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.config, "config", "", `config file, or "demo" for the embedded demo config (default `+defaultConfigPath+`)`)
	fs.StringVar(&c.listen, "listen", "", "override listen.client")
	fs.StringVar(&c.admin, "admin", "", "override listen.admin")
	fs.StringVar(&c.logLevel, "log-level", "", "override log.level")
}

// load reads the config with flag overrides applied last.
func (c *common) load() (config.Config, string, error) {
	path := c.config
	if path == "" {
		if _, err := os.Stat(defaultConfigPath); err != nil {
			return config.Config{}, "", fmt.Errorf("no --config given and %s does not exist (use --config demo for the embedded demo)", defaultConfigPath)
		}
		path = defaultConfigPath
	}
	env := os.Environ()
	if c.listen != "" {
		env = append(env, config.EnvPrefix+"LISTEN_CLIENT="+c.listen)
	}
	if c.admin != "" {
		env = append(env, config.EnvPrefix+"LISTEN_ADMIN="+c.admin)
	}
	if c.logLevel != "" {
		env = append(env, config.EnvPrefix+"LOG_LEVEL="+c.logLevel)
	}
	cfg, err := config.Load(path, env)
	return cfg, path, err
}

// parse parses a config-reading command's flags; extra registers the
// command's own.
func parse(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (*common, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := new(common)
	c.register(fs)
	if extra != nil {
		extra(fs)
	}
	return c, fs.Parse(args)
}

func checkConfigCmd(args []string, stdout, stderr io.Writer) error {
	c, err := parse("check-config", args, stderr, nil)
	if err != nil {
		return err
	}
	cfg, path, err := c.load()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok\n%s\n", path, cfg.JSON())
	return nil
}

func tokenCmd(args []string, stdout, stderr io.Writer) error {
	var sub *string
	var ttl *time.Duration
	c, err := parse("token", args, stderr, func(fs *flag.FlagSet) {
		sub = fs.String("sub", "", "subject (user id), required")
		ttl = fs.Duration("ttl", time.Hour, "lifetime of the token (0: no exp claim)")
	})
	if err != nil {
		return err
	}
	if *sub == "" {
		return errors.New("--sub is required")
	}
	cfg, _, err := c.load()
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
	fmt.Fprintln(stdout, tok)
	return nil
}

func serveCmd(args []string, stdout, stderr io.Writer) error {
	c, err := parse("serve", args, stderr, nil)
	if err != nil {
		return err
	}
	cfg, path, err := c.load()
	if err != nil {
		return err
	}
	return serve(context.Background(), cfg, func() (config.Config, error) {
		next, _, err := c.load()
		return next, err
	}, path, stdout, nil)
}
