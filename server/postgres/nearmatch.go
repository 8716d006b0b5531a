package postgres

import (
	"context"
	"strings"
	"unicode"

	"github.com/jackc/pgx/v5"
)

// nearDistance is the largest edit distance (Levenshtein: one symbol
// substituted, inserted or deleted per edit) of a near match.
const nearDistance = 2

// NearMatches returns up to n registered serials (default 5, at most 20)
// whose device id is within two typing mistakes of the query's device id
// (its last '#' field, spaces removed, upper-cased), closest first, then
// by serial.
//
// It never scans the registry. It walks the device ids as a trie held by
// the byte-ordered index devices_device_id_bytes, along the query's own
// symbols: the registered ids one edit away can only branch off the
// query's path at a prefix that exists, so it asks the index for the
// children of the query's prefixes (one descent per child), builds every
// id one edit away that those children allow and looks them up by
// equality. Only when fewer than n are found does it take the second
// edit: for each branch it finds how far the branch's continuations exist
// (two descents each), asks for the children along them and looks up the
// ids two edits away. The work follows the ids near the query, not the
// size of the registry. The candidates' distances are then computed by
// levenshtein (fuzzystrmatch), so the ranking is the database's.
func (db *DB) NearMatches(ctx context.Context, query string, n int) ([]string, error) {
	id, n := nearQuery(query, n)
	if id == "" {
		return nil, nil
	}
	q := []rune(id)
	nodes := make([]string, len(q)+1)
	for i := range nodes {
		nodes[i] = string(q[:i])
	}
	kids, err := db.children(ctx, nodes)
	if err != nil {
		return nil, translate(err, "finding near matches")
	}
	cands := map[string]struct{}{}
	walkOneEdit(cands, "", q, kids)
	out, err := db.rankNear(ctx, id, cands, 1, n)
	if err != nil || len(out) == n {
		return out, err
	}

	// The second edit. An id two edits away first differs from the query
	// at some i, where it goes on with a child c of q[:i] (or stops, when
	// it is q less its last two symbols); what follows c is within one
	// edit of q[i+1:] (c replaced q[i]), of q[i:] (c was inserted), of
	// q[i+2:] (q[i] was dropped and c is q[i+1]), or equals q[i+3:] (q[i]
	// and q[i+1] were dropped and c is q[i+2]).
	if len(q) >= 2 {
		cands[string(q[:len(q)-2])] = struct{}{}
	}
	type branch struct {
		prefix string
		rest   []rune
	}
	var branches []branch
	for i := 0; i <= len(q); i++ {
		for _, c := range kids[nodes[i]] {
			if i < len(q) && c == q[i] {
				continue
			}
			p := nodes[i] + string(c)
			if i == len(q) {
				branches = append(branches, branch{p, nil})
				continue
			}
			branches = append(branches, branch{p, q[i+1:]}, branch{p, q[i:]})
			if i+1 < len(q) && c == q[i+1] {
				branches = append(branches, branch{p, q[i+2:]})
			}
			if i+2 < len(q) && c == q[i+2] {
				cands[p+string(q[i+3:])] = struct{}{}
			}
		}
	}
	full := make([]string, len(branches))
	for i, b := range branches {
		full[i] = b.prefix + string(b.rest)
	}
	exist, err := db.existingPrefixes(ctx, full)
	if err != nil {
		return nil, translate(err, "finding near matches")
	}
	var more []string
	seen := map[string]bool{}
	for i, b := range branches {
		base := len([]rune(b.prefix))
		for j := 0; j <= len(b.rest) && base+j <= exist[i]; j++ {
			node := b.prefix + string(b.rest[:j])
			if _, done := kids[node]; !done && !seen[node] {
				seen[node] = true
				more = append(more, node)
			}
		}
	}
	kids2, err := db.children(ctx, more)
	if err != nil {
		return nil, translate(err, "finding near matches")
	}
	for node, cs := range kids2 {
		kids[node] = cs
	}
	for _, b := range branches {
		walkOneEdit(cands, b.prefix, b.rest, kids)
	}
	return db.rankNear(ctx, id, cands, nearDistance, n)
}

// nearQuery is the device id NearMatches looks for (the query's last '#'
// field, spaces and control characters removed, upper-cased, at most 64
// bytes) and the number of
// matches wanted (default 5, at most 20).
func nearQuery(query string, n int) (string, int) {
	if n <= 0 {
		n = 5
	}
	if n > 20 {
		n = 20
	}
	id := query
	if i := strings.LastIndexByte(id, '#'); i >= 0 {
		id = id[i+1:]
	}
	id = strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return -1
		}
		return unicode.ToUpper(r)
	}, id)
	if len(id) > 64 {
		id = strings.ToValidUTF8(id[:64], "")
	}
	return id, n
}

// walkOneEdit adds to cands every string prefix+r where r is t or one
// edit away from t and could be registered: r first differs from t at
// some j, where it goes on with a child c of prefix+t[:j] (kids holds the
// children of every such node that exists) or stops (t less its last
// symbol); after c comes t[j:] (c inserted), t[j+1:] (c replaced t[j]) or
// t[j+2:] (t[j] dropped, c is t[j+1]).
func walkOneEdit(cands map[string]struct{}, prefix string, t []rune, kids map[string][]rune) {
	cands[prefix+string(t)] = struct{}{}
	if len(t) > 0 {
		cands[prefix+string(t[:len(t)-1])] = struct{}{}
	}
	for j := 0; j <= len(t); j++ {
		node := prefix + string(t[:j])
		for _, c := range kids[node] {
			if j < len(t) && c == t[j] {
				continue
			}
			base := node + string(c)
			cands[base+string(t[j:])] = struct{}{}
			if j < len(t) {
				cands[base+string(t[j+1:])] = struct{}{}
			}
			if j+1 < len(t) && c == t[j+1] {
				cands[base+string(t[j+2:])] = struct{}{}
			}
		}
	}
}

// childrenSQL finds, for each prefix in $1, the symbols that follow it in
// registered device ids: a loose index scan, each step one descent of
// devices_device_id_bytes to the first id after the previous child.
// Device ids are ASCII (devices_serial_format), so chr(127) bounds the ids
// that start with a prefix.
const childrenSQL = `WITH RECURSIVE kid(node, c) AS (
	SELECT n, (SELECT substr(d.device_id, char_length(n) + 1, 1) FROM devices d
		WHERE d.device_id COLLATE "C" > n COLLATE "C"
		  AND d.device_id COLLATE "C" < (n || chr(127)) COLLATE "C"
		ORDER BY d.device_id COLLATE "C" LIMIT 1)
	FROM unnest($1::text[]) AS n
  UNION ALL
	SELECT k.node, (SELECT substr(d.device_id, char_length(k.node) + 1, 1) FROM devices d
		WHERE d.device_id COLLATE "C" >= (k.node || chr(ascii(k.c) + 1)) COLLATE "C"
		  AND d.device_id COLLATE "C" < (k.node || chr(127)) COLLATE "C"
		ORDER BY d.device_id COLLATE "C" LIMIT 1)
	FROM kid k WHERE k.c IS NOT NULL
)
SELECT node, c FROM kid WHERE c IS NOT NULL`

// children returns the symbols that follow each of nodes in registered
// device ids; a node no id starts with has no entry.
func (db *DB) children(ctx context.Context, nodes []string) (map[string][]rune, error) {
	out := map[string][]rune{}
	if len(nodes) == 0 {
		return out, nil
	}
	rows, err := db.pool.Query(ctx, childrenSQL, nodes)
	if err != nil {
		return nil, err
	}
	var node, c string
	_, err = pgx.ForEachRow(rows, []any{&node, &c}, func() error {
		for _, r := range c {
			out[node] = append(out[node], r)
		}
		return nil
	})
	return out, err
}

// existingPrefixes returns, for each of ss, the length in symbols of its
// longest prefix that some registered device id starts with. The ids
// sharing a prefix with s are together in byte order, on one side of s or
// the other, so the ids just before and just after s tell.
func (db *DB) existingPrefixes(ctx context.Context, ss []string) ([]int, error) {
	out := make([]int, len(ss))
	if len(ss) == 0 {
		return out, nil
	}
	rows, err := db.pool.Query(ctx, `SELECT
		(SELECT device_id FROM devices WHERE device_id COLLATE "C" >= s COLLATE "C" ORDER BY device_id COLLATE "C" LIMIT 1),
		(SELECT device_id FROM devices WHERE device_id COLLATE "C" < s COLLATE "C" ORDER BY device_id COLLATE "C" DESC LIMIT 1)
		FROM unnest($1::text[]) WITH ORDINALITY AS u(s, i) ORDER BY i`, ss)
	if err != nil {
		return nil, err
	}
	i := 0
	var after, before *string
	_, err = pgx.ForEachRow(rows, []any{&after, &before}, func() error {
		s := []rune(ss[i])
		for _, id := range []*string{after, before} {
			if id != nil {
				out[i] = max(out[i], commonPrefix(s, []rune(*id)))
			}
		}
		i++
		return nil
	})
	return out, err
}

// commonPrefix is the number of leading symbols a and b share.
func commonPrefix(a, b []rune) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// rankNear looks the candidate device ids up by equality (in the byte-ordered
// index, whose comparisons are the cheapest) and returns the
// serials of up to n of them within maxDist edits of id, closest first,
// then by serial.
func (db *DB) rankNear(ctx context.Context, id string, cands map[string]struct{}, maxDist, n int) ([]string, error) {
	list := make([]string, 0, len(cands))
	for c := range cands {
		if c != "" && len(c) <= 64 {
			list = append(list, c)
		}
	}
	rows, err := db.pool.Query(ctx, `SELECT serial FROM (
			SELECT serial, levenshtein_less_equal(device_id, $1, $3) AS dist FROM devices
			WHERE device_id COLLATE "C" = ANY($2::text[] COLLATE "C")
		) m WHERE dist <= $3 ORDER BY dist, serial LIMIT $4`, id, list, maxDist, n)
	if err != nil {
		return nil, translate(err, "finding near matches")
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, translate(err, "finding near matches")
	}
	return out, nil
}

// nearMatchesScan is what NearMatches answers, found by computing the
// distance of every registered device id: the reference the tests and the
// benchmarks hold NearMatches to.
func (db *DB) nearMatchesScan(ctx context.Context, query string, n int) ([]string, error) {
	id, n := nearQuery(query, n)
	if id == "" {
		return nil, nil
	}
	rows, err := db.pool.Query(ctx, `SELECT serial FROM (
			SELECT serial, levenshtein_less_equal(device_id, $1, $3) AS dist FROM devices
		) m WHERE dist <= $3 ORDER BY dist, serial LIMIT $2`, id, n, nearDistance)
	if err != nil {
		return nil, translate(err, "finding near matches")
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, translate(err, "finding near matches")
	}
	return out, nil
}
