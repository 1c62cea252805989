package relay

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// pionLogs routes pion's leveled logger into slog. pion's Info is chatty per request
// ("permission denied for ..."), so it goes to Debug; its Errors are mostly a peer or
// client gone away, so they go to Warn.
type pionLogs struct{ l *slog.Logger }

func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{l: f.l.With("component", "pion/"+scope)}
}

type pionLogger struct{ l *slog.Logger }

func (p pionLogger) log(level slog.Level, msg string) {
	p.l.Log(context.Background(), level, msg)
}

func (p pionLogger) logf(level slog.Level, format string, args ...any) {
	if p.l.Enabled(context.Background(), level) {
		p.l.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
}

func (p pionLogger) Trace(msg string)                  { p.log(slog.LevelDebug-4, msg) }
func (p pionLogger) Tracef(format string, args ...any) { p.logf(slog.LevelDebug-4, format, args...) }
func (p pionLogger) Debug(msg string)                  { p.log(slog.LevelDebug, msg) }
func (p pionLogger) Debugf(format string, args ...any) { p.logf(slog.LevelDebug, format, args...) }
func (p pionLogger) Info(msg string)                   { p.log(slog.LevelDebug, msg) }
func (p pionLogger) Infof(format string, args ...any)  { p.logf(slog.LevelDebug, format, args...) }
func (p pionLogger) Warn(msg string)                   { p.log(slog.LevelWarn, msg) }
func (p pionLogger) Warnf(format string, args ...any)  { p.logf(slog.LevelWarn, format, args...) }
func (p pionLogger) Error(msg string)                  { p.log(slog.LevelWarn, msg) }
func (p pionLogger) Errorf(format string, args ...any) { p.logf(slog.LevelWarn, format, args...) }
