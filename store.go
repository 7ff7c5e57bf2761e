package webhook

import (
	"context"
	"database/sql"

	"github.com/sparc-webhooks/webhook/internal/store"
)

// store.go adapts the public types to the internal store
// (internal/store), which holds every SQL statement: the root package
// validates, the store reads and writes, and this file converts between the
// two.

// storeConfig is what the store needs of cfg, whose defaults are set.
func storeConfig(cfg Config) store.Config {
	return store.Config{
		Synchronous:          cfg.Synchronous.pragma(),
		BusyTimeout:          cfg.BusyTimeout,
		Workers:              cfg.Workers,
		SecretKey:            cfg.SecretKey,
		DisableAfterFailures: cfg.DisableAfterFailures,
		DisableAfterPeriod:   cfg.DisableAfterPeriod,
		BreakerThreshold:     cfg.BreakerThreshold,
		BreakerCooldown:      cfg.BreakerCooldown,
		BreakerMaxCooldown:   cfg.BreakerMaxCooldown,
		RetryPolicy:          cfg.RetryPolicy,
		Logger:               cfg.Logger,
		ParseMailto:          parseMailto,
	}
}

// openStore opens the store of Open (path) or New (db).
func openStore(ctx context.Context, path string, db *sql.DB, cfg store.Config) (*store.Store, error) {
	if db != nil {
		return store.New(ctx, db, cfg)
	}
	st, err := store.Open(ctx, path, cfg)
	if store.ErrInvalidURL(err) {
		return nil, invalid("path", "is not a valid PostgreSQL URL")
	}
	return st, err
}

func fromWebhook(w Webhook) store.Webhook {
	return store.Webhook{
		ID: w.ID, URL: w.URL, Format: string(w.Format), Events: w.Events, Enabled: w.Enabled,
		Description: w.Description, CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt,
		FailureStreak: w.FailureStreak, LastSuccessAt: w.LastSuccessAt, LastFailureAt: w.LastFailureAt,
		DisabledReason: w.DisabledReason, DisabledAt: w.DisabledAt, PreviousSecretUntil: w.PreviousSecretUntil,
	}
}

func toWebhook(w store.Webhook) Webhook {
	return Webhook{
		ID: w.ID, URL: w.URL, Format: Format(w.Format), Events: w.Events, Enabled: w.Enabled,
		Description: w.Description, CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt,
		FailureStreak: w.FailureStreak, LastSuccessAt: w.LastSuccessAt, LastFailureAt: w.LastFailureAt,
		DisabledReason: w.DisabledReason, DisabledAt: w.DisabledAt, PreviousSecretUntil: w.PreviousSecretUntil,
	}
}

func toDelivery(d store.Delivery) Delivery {
	return Delivery{
		ID: d.ID, WebhookID: d.WebhookID, EventID: d.EventID, EventType: d.EventType,
		Status: statusFromStore(d.Status), Attempts: d.Attempts, NextAttemptAt: d.NextAttemptAt,
		LastStatusCode: d.LastStatusCode, LastError: d.LastError, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt,
	}
}

func toAttempt(a store.Attempt) Attempt {
	return Attempt{
		ID: a.ID, DeliveryID: a.DeliveryID, Number: a.Number, Trigger: triggerFromStore(a.Trigger),
		StartedAt: a.StartedAt, Duration: a.Duration, StatusCode: a.StatusCode,
		ErrorClass: a.ErrorClass, Error: a.Error, ResponseBody: a.ResponseBody,
	}
}

func toDisabled(d store.Disabled) WebhookDisabled {
	return WebhookDisabled{WebhookID: d.WebhookID, URL: d.URL, Reason: d.Reason, At: d.At}
}
