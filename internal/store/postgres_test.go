package store_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hubuim/hubuim/internal/store"
	"github.com/hubuim/hubuim/internal/store/storetest"
	"github.com/hubuim/hubuim/internal/testenv"
)

// pgSchema creates a fresh schema on the shared test server and drops it
// when the test ends.
func pgSchema(tb testing.TB) (dsn, schema string) {
	tb.Helper()
	dsn = testenv.PostgresDSN(tb)
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema = "storetest_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		tb.Fatalf("create schema: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			tb.Errorf("cleanup connect: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			tb.Errorf("drop schema: %v", err)
		}
	})
	return dsn, schema
}

func openPostgres(tb testing.TB) *store.Postgres {
	tb.Helper()
	dsn, schema := pgSchema(tb)
	s, err := store.NewPostgres(context.Background(), store.PostgresConfig{DSN: dsn, Schema: schema})
	if err != nil {
		tb.Fatalf("NewPostgres: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

func TestPostgresConformance(t *testing.T) {
	storetest.Run(t, func(tb testing.TB) store.Store { return openPostgres(tb) })
}

func schemaPool(t *testing.T, dsn, schema string) *pgxpool.Pool {
	t.Helper()
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	pc.ConnConfig.RuntimeParams["search_path"] = schema
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func TestMigrateConcurrentAndIdempotent(t *testing.T) {
	dsn, schema := pgSchema(t)
	pool := schemaPool(t, dsn, schema)
	ctx := context.Background()
	const replicas = 4
	var wg sync.WaitGroup
	errs := make([]error, replicas)
	for i := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = store.Migrate(ctx, pool)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
	var n, maxV int
	if err := pool.QueryRow(ctx, `SELECT count(*), max(version) FROM schema_migrations`).Scan(&n, &maxV); err != nil {
		t.Fatal(err)
	}
	if n != maxV || n < 1 {
		t.Fatalf("schema_migrations has %d rows, max version %d", n, maxV)
	}
	if err := store.Migrate(ctx, pool); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	// A database migrated by a newer binary is refused.
	if _, err := pool.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, 'future.sql')`, maxV+1); err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx, pool); !errors.Is(err, store.ErrSchemaTooNew) {
		t.Fatalf("Migrate on newer schema: err=%v, want ErrSchemaTooNew", err)
	}
}

func TestPostgresConfigValidate(t *testing.T) {
	for name, cfg := range map[string]store.PostgresConfig{
		"no dsn":       {},
		"bad schema":   {DSN: "postgres://x", Schema: "Bad-Name"},
		"neg maxconns": {DSN: "postgres://x", MaxConns: -1},
	} {
		if _, err := store.NewPostgres(context.Background(), cfg); err == nil {
			t.Errorf("%s: NewPostgres succeeded", name)
		}
	}
}

func TestPostgresExternalPool(t *testing.T) {
	dsn, schema := pgSchema(t)
	pool := schemaPool(t, dsn, schema)
	s, err := store.NewPostgres(context.Background(), store.PostgresConfig{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The caller's pool stays open.
	if err := pool.Ping(context.Background()); err != nil {
		t.Fatalf("pool closed by the store: %v", err)
	}
}

func TestPostgresUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Port 1 on loopback: connection refused at once.
	_, err := store.NewPostgres(ctx, store.PostgresConfig{DSN: "postgres://postgres@127.0.0.1:1/x?connect_timeout=2"})
	if err == nil {
		t.Fatal("NewPostgres against a closed port succeeded")
	}
}
