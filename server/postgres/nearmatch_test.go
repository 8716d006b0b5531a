package postgres_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/dvrhotline/hotline/server/postgres"
	"github.com/dvrhotline/hotline/server/postgres/pgtest"
)

// productionLines are a realistic registry's device ids: each factory line
// assigns consecutive numbers after a fixed prefix, so that most ids have
// many neighbours one or two symbols away, and lines differ from each
// other in a symbol or two. Each is {prefix, first number, count, digits}.
var productionLines = []struct {
	prefix       string
	first, count int
	digits       int
}{
	{"DVR1101134C", 8000, 20000, 5},
	{"DVR1101135C", 0, 15000, 5},
	{"DVR1201134C", 0, 10000, 5},
	{"HDR1101134D", 0, 4000, 6},
	{"DVR1101134", 0, 1000, 4},
}

// seedProductionLines registers productionLines' devices in the database
// at url, in bulk, with serials whose order is not the ids' order.
func seedProductionLines(tb testing.TB, url string) []string {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, l := range productionLines {
		_, err := conn.Exec(ctx, `INSERT INTO devices (serial, device_id, model, production_date)
			SELECT 'LOT' || lpad((i % 997)::text, 3, '0') || '#' || (date '2017-08-01' + i % 300) || '#' || (i % 10) || '#' || id,
				id, 'WBXHD082S2T', date '2017-08-01' + i % 300
			FROM generate_series($2::int, $2::int + $3::int - 1) AS i, LATERAL (SELECT $1 || lpad(i::text, $4::int, '0') AS id) x`,
			l.prefix, l.first, l.count, l.digits)
		if err != nil {
			tb.Fatal(err)
		}
	}
	rows, err := conn.Query(ctx, `SELECT device_id FROM devices ORDER BY device_id`)
	if err != nil {
		tb.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		tb.Fatal(err)
	}
	return ids
}

// typoAlphabet is what a typing mistake puts in: the ids' own symbols.
const typoAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// typo applies one random mistake to s: a symbol replaced, inserted,
// dropped, or two neighbours swapped.
func typo(r *rand.Rand, s string) string {
	b := []byte(s)
	c := typoAlphabet[r.IntN(len(typoAlphabet))]
	switch i := r.IntN(len(b)); r.IntN(4) {
	case 0:
		b[i] = c
	case 1:
		b = slices.Insert(b, r.IntN(len(b)+1), c)
	case 2:
		b = slices.Delete(b, i, i+1)
	default:
		if i+1 < len(b) {
			b[i], b[i+1] = b[i+1], b[i]
		}
	}
	return string(b)
}

// TestNearMatchesEqualTheScan holds the indexed near matches to the brute
// force (every device id's distance computed) on a registry of production
// lines, for queries one and two mistakes away from registered ids, for
// ids at the ends of lines and between them, and for strings near
// nothing, with the default five matches and with twenty.
func TestNearMatchesEqualTheScan(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t, "near_matches")
	if err := postgres.Migrate(ctx, url); err != nil {
		t.Fatal(err)
	}
	ids := seedProductionLines(t, url)
	db, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	r := rand.New(rand.NewPCG(14, 2026))
	queries := []string{
		"DVR1101134C07999", "DVR1101134C28000", "DVR1101134C", "DVR1101134C0800", "DVR110113", "DVR1101134C080000",
		"HDR1101134D004000", "DVR1101134C1500", "QQQQQQQQQQQQQQQQ", "D", "LOT123#2017-08-01#3#DVR1101134C08011",
		"dvr 1101 134c 08011", "DVR1101134C08O11", "DVR11O1134CO8011", "DVR1101134-08011", "DVR1101134C08011\u00e9",
	}
	for range 120 {
		queries = append(queries, typo(r, ids[r.IntN(len(ids))]))
	}
	for range 180 {
		queries = append(queries, typo(r, typo(r, ids[r.IntN(len(ids))])))
	}
	for range 20 {
		queries = append(queries, typo(r, typo(r, typo(r, ids[r.IntN(len(ids))]))))
	}
	for i, q := range queries {
		want, err := db.NearMatchesScan(ctx, q, 20)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{5, 20} {
			got, err := db.NearMatches(ctx, q, n)
			if err != nil {
				t.Fatalf("NearMatches(%q, %d): %v", q, n, err)
			}
			if w := want[:min(n, len(want))]; !slices.Equal(got, w) {
				t.Errorf("query %d %q, n=%d:\nindexed %v\nscan    %v", i, q, n, got, w)
			}
		}
	}
	t.Logf("%d queries on %d devices in %d lines: indexed near matches equal the scan's", len(queries), len(ids), len(productionLines))
}

// TestNearMatchesFindsEveryKindOfMistake checks that each kind of mistake,
// alone and in pairs, finds the registered id among the near matches of a
// registry where it has no neighbours.
func TestNearMatchesFindsEveryKindOfMistake(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t, "near_kinds")
	if err := postgres.Migrate(ctx, url); err != nil {
		t.Fatal(err)
	}
	db, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const serial = "JZ6OES#2017-08-01#3#DVR1101134C08011"
	if _, err := db.Pool().Exec(ctx, `INSERT INTO devices (serial, device_id, model, production_date)
		VALUES ($1, 'DVR1101134C08011', 'WBXHD082S2T', '2017-08-01')`, serial); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, query string }{
		{"found/exact-id", "DVR1101134C08011"},
		{"found/substituted", "DVR1101134C08017"},
		{"found/substituted-first", "EVR1101134C08011"},
		{"found/inserted", "DVR11011134C08011"},
		{"found/inserted-at-end", "DVR1101134C080112"},
		{"found/dropped", "DVR110114C08011"},
		{"found/dropped-first", "VR1101134C08011"},
		{"found/dropped-last", "DVR1101134C0801"},
		{"found/swapped", "DVR1101134C80011"},
		{"found/two-substituted", "DVR1101734C08017"},
		{"found/two-dropped-together", "DVR1101134C011"},
		{"found/two-dropped-at-end", "DVR1101134C080"},
		{"found/two-inserted-together", "DVR1101134C0899011"},
		{"found/two-inserted-at-end", "DVR1101134C0801199"},
		{"found/dropped-and-substituted", "DVR110114C08012"},
		{"found/inserted-and-dropped", "DVR11011134C0801"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := db.NearMatches(ctx, tc.query, 5)
			if err != nil || !slices.Equal(got, []string{serial}) {
				t.Errorf("NearMatches(%q) = %v, %v; want [%s]", tc.query, got, err, serial)
			}
		})
	}
	t.Run("not-found/three-mistakes", func(t *testing.T) {
		if got, err := db.NearMatches(ctx, "DVR1101134C08999", 5); err != nil || len(got) != 0 {
			t.Errorf("NearMatches = %v, %v; want none", got, err)
		}
	})
	t.Run("not-found/control-characters", func(t *testing.T) {
		if got, err := db.NearMatches(ctx, "DVR1101134C0801\x00", 5); err != nil || len(got) > 1 {
			t.Errorf("NearMatches = %v, %v", got, err)
		}
	})
}
