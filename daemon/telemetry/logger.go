package telemetry

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// ParseLevel parses debug, info, warn (or warning) and error, in any case.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return slog.LevelInfo, fmt.Errorf("parse log level %q: want debug, info, warn or error", s)
}

// NewLogger returns a logger writing JSON lines (time, level, msg, attrs) to
// w, with every URL secret masked (redact.String) in messages and values, and the LevelVar that controls it so that a reload (SIGHUP) can change
// the level with SetLevel. An invalid level falls back to info and is
// reported once through the new logger at warn level; config validation is
// expected to have refused it already.
func NewLogger(w io.Writer, level string) (*slog.Logger, *slog.LevelVar) {
	lv := new(slog.LevelVar)
	l, err := ParseLevel(level)
	lv.Set(l)
	log := slog.New(redactHandler{slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv})})
	if err != nil {
		log.Warn("invalid log level, using info", slog.Any("err", err))
	}
	return log, lv
}

// SetLevel parses level and sets lv to it; on error lv is left unchanged.
func SetLevel(lv *slog.LevelVar, level string) error {
	l, err := ParseLevel(level)
	if err != nil {
		return err
	}
	lv.Set(l)
	return nil
}
