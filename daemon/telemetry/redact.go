package telemetry

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/orchestratord/orchestratord/daemon/redact"
)

// redactHandler passes records to next with every URL secret masked
// (redact.String) in the message, string values, errors and Stringers, so
// that no log line shows a URL password or a query value, whoever logs it.
type redactHandler struct{ next slog.Handler }

// Enabled reports whether next handles level.
func (h redactHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle masks r's message and attributes and hands the copy to next.
func (h redactHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, redact.String(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

// WithAttrs masks attrs once, when they are attached.
func (h redactHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	masked := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		masked[i] = redactAttr(a)
	}
	return redactHandler{h.next.WithAttrs(masked)}
}

// WithGroup returns the handler for a group.
func (h redactHandler) WithGroup(name string) slog.Handler {
	return redactHandler{h.next.WithGroup(name)}
}

func redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, redact.String(v.String()))
	case slog.KindGroup:
		g := v.Group()
		masked := make([]slog.Attr, len(g))
		for i, ga := range g {
			masked[i] = redactAttr(ga)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(masked...)}
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, redact.String(x.Error()))
		case fmt.Stringer:
			return slog.String(a.Key, redact.String(x.String()))
		case []string:
			masked := make([]string, len(x))
			for i, s := range x {
				masked[i] = redact.String(s)
			}
			return slog.Any(a.Key, masked)
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
