package postgres

import (
	"context"
	"slices"
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
// by device id in byte order.
//
// It never scans the registry. It walks the device ids as a trie held by
// the byte-ordered index devices_device_id_bytes, along the query's own
// symbols: the registered ids one edit away can only branch off the
// query's path at a prefix that exists, so it asks the index for the
// children of the query's prefixes (one descent per child), builds the
// ids one edit away that those children allow and looks them up by
// equality. Only when fewer than n are found does it take the second
// edit: for each branch it finds how far the branch's continuations exist
// (two descents each), asks for the children along them and looks up the
// ids two edits away, taking the branches in byte order, in rounds, until
// the matches it keeps all come before the next branch.
//
// What it builds is bounded by the registry's shape, read first from
// devices_device_id_endings in a few descents (see shape): a string is
// built only if registered ids have its length and, after its last edit,
// it goes on as the query ends and some registered id of that length
// ends. A mistake in the dense end of a production line's ids (where
// every symbol has ten children) then costs the few branches that can
// still end as the query does. The work follows the ids near the query,
// not the size of the registry. The candidates' distances are computed by
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
	kids, sh, err := db.childrenAndShape(ctx, nodes, q)
	if err != nil {
		return nil, translate(err, "finding near matches")
	}
	known := 0 // how many of q's leading symbols some registered id starts with
	for known < len(q) && slices.Contains(kids[nodes[known]], q[known]) {
		known++
	}
	cands := map[string]struct{}{}
	walkOneEdit(cands, "", 0, q, known, kids, sh)
	found, err := db.rankNear(ctx, id, cands, 1, n)
	if err != nil || len(found) == n {
		return serials(found), err
	}
	// Every id within one edit is in found; what the second edit adds is
	// two edits away, so it ranks after them, by device id.
	cands = map[string]struct{}{}

	// The second edit. An id two edits away first differs from the query
	// at some i, where it goes on with a child c of q[:i] (or stops, when
	// it is q less its last two symbols); what follows c is within one
	// edit of q[i+1:] (c replaced q[i]), of q[i:] (c was inserted), of
	// q[i+2:] (q[i] was dropped and c is q[i+1]), or equals q[i+3:] (q[i]
	// and q[i+1] were dropped and c is q[i+2]).
	if len(q) >= 2 && known >= len(q)-2 && sh.fits(len(q)-2, 0) {
		cands[nodes[len(q)-2]] = struct{}{}
	}
	type branch struct {
		prefix string
		plen   int
		rest   []rune
	}
	var branches []branch
	add := func(b branch) {
		if m := b.plen + len(b.rest); sh.has(m-1) || sh.has(m) || sh.has(m+1) {
			branches = append(branches, b)
		}
	}
	for i := 0; i <= len(q); i++ {
		for _, c := range kids[nodes[i]] {
			if i < len(q) && c == q[i] {
				continue
			}
			p := nodes[i] + string(c)
			if i == len(q) {
				add(branch{p, i + 1, nil})
				continue
			}
			add(branch{p, i + 1, q[i+1:]})
			add(branch{p, i + 1, q[i:]})
			if i+1 < len(q) && c == q[i+1] {
				add(branch{p, i + 1, q[i+2:]})
			}
			if i+2 < len(q) && c == q[i+2] && sh.fits(len(q)-2, len(q)-i-3) {
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
	for i, b := range branches {
		exist[i] = max(exist[i]-b.plen, 0) // how many symbols of rest continue a registered id
	}

	// Every id a branch gives starts with its prefix, and two branches'
	// prefixes are equal or neither starts the other: taken in byte
	// order, the branches give their ids in byte order. So they are
	// walked in rounds, in that order (doubling how many children each
	// round reads), until n ids are kept and the next branch's prefix
	// comes after the last of them: no id it gives could rank before.
	order := make([]int, len(branches))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return strings.Compare(branches[a].prefix, branches[b].prefix) })
	budget := 16
	for next := 0; next < len(order) || len(cands) > 0; {
		// This round's branches: from next on, up to the budget of
		// children to read, ending between two prefixes.
		var more []string
		seen := map[string]bool{}
		end := next
		for ; end < len(order); end++ {
			if len(more) >= budget && branches[order[end]].prefix != branches[order[end-1]].prefix {
				break
			}
			b := branches[order[end]]
			for _, node := range kidNodes(b.prefix, b.plen, b.rest, exist[order[end]], sh) {
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
		for _, i := range order[next:end] {
			b := branches[i]
			walkOneEdit(cands, b.prefix, b.plen, b.rest, exist[i], kids, sh)
		}
		got, err := db.rankNear(ctx, id, cands, nearDistance, n)
		if err != nil {
			return nil, err
		}
		found = mergeNear(found, got, n)
		cands, next, budget = map[string]struct{}{}, end, budget*2
		if len(found) == n && next < len(order) && found[n-1].id < branches[order[next]].prefix {
			break
		}
	}
	return serials(found), nil
}

// nearMatch is a registered device within nearDistance of a query.
type nearMatch struct {
	id, serial string
	dist       int
}

// before says whether a ranks before b: closer, then by device id in
// byte order (rankSQL's order).
func (a nearMatch) before(b nearMatch) bool {
	return a.dist < b.dist || a.dist == b.dist && a.id < b.id
}

// mergeNear returns the first n of a and b, both ranked; an id of b
// already in a (found again by another walk) is dropped.
func mergeNear(a, b []nearMatch, n int) []nearMatch {
	b = slices.DeleteFunc(slices.Clone(b), func(m nearMatch) bool {
		return slices.ContainsFunc(a, func(x nearMatch) bool { return x.id == m.id })
	})
	out := make([]nearMatch, 0, min(n, len(a)+len(b)))
	for len(out) < n && (len(a) > 0 || len(b) > 0) {
		if len(b) == 0 || len(a) > 0 && a[0].before(b[0]) {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return out
}

// serials are the matches' serials, in their order.
func serials(ms []nearMatch) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.serial
	}
	return out
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

// shape is what the registry allows of a near match: for each length that
// registered device ids have, the longest ending of the query that some
// registered id of that length has. Every near match is the query with at
// most two edits, and after its last edit it goes on as the query ends:
// a string that registered ids do not allow that way is never looked up.
type shape map[int]int

// has says whether some registered device id is n symbols long.
func (s shape) has(n int) bool { _, ok := s[n]; return ok }

// fits says whether a string of n symbols whose last end symbols are the
// query's last end symbols could be a registered device id.
func (s shape) fits(n, end int) bool { t, ok := s[n]; return ok && end <= t }

// walkOneEdit adds to cands every string prefix+r that could be
// registered, where r is t or one edit away from t, prefix is plen
// symbols long and t is an ending of the query. r first differs from t at
// some j: there it drops t[j], or goes on with a child c of prefix+t[:j]
// (kids holds the children of every such node that kidNodes names),
// followed by t[j:] (c inserted) or t[j+1:] (c replaced t[j]). known is
// how many of t's leading symbols continue some registered id after
// prefix: a string that follows t further cannot be registered, nor one
// that sh does not fit.
func walkOneEdit(cands map[string]struct{}, prefix string, plen int, t []rune, known int, kids map[string][]rune, sh shape) {
	m := plen + len(t)
	if known >= len(t) && sh.fits(m, len(t)) {
		cands[prefix+string(t)] = struct{}{}
	}
	for j := 0; j < len(t) && j <= known; j++ {
		if sh.fits(m-1, len(t)-j-1) {
			cands[prefix+string(t[:j])+string(t[j+1:])] = struct{}{}
		}
	}
	for j := 0; j <= len(t) && j <= known; j++ {
		sub := j < len(t) && sh.fits(m, len(t)-j-1)
		ins := sh.fits(m+1, len(t)-j)
		if !sub && !ins {
			continue
		}
		node := prefix + string(t[:j])
		for _, c := range kids[node] {
			if j < len(t) && c == t[j] {
				continue
			}
			base := node + string(c)
			if ins {
				cands[base+string(t[j:])] = struct{}{}
			}
			if sub {
				cands[base+string(t[j+1:])] = struct{}{}
			}
		}
	}
}

// kidNodes names the nodes prefix+t[:j] whose children walkOneEdit reads:
// those that exist (j <= known) where a symbol may be inserted or
// substituted as sh allows.
func kidNodes(prefix string, plen int, t []rune, known int, sh shape) []string {
	m := plen + len(t)
	var out []string
	for j := 0; j <= len(t) && j <= known; j++ {
		if (j < len(t) && sh.fits(m, len(t)-j-1)) || sh.fits(m+1, len(t)-j) {
			out = append(out, prefix+string(t[:j]))
		}
	}
	return out
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

// shapeSQL reads the registry's shape for the reversed query $1 from
// devices_device_id_endings: the lengths of registered ids (a loose scan,
// one descent per length) and, for each, the ids of that length, reversed,
// just after and just before $1 in byte order: the ids that end like the
// query are together there.
const shapeSQL = `WITH RECURSIVE len(n) AS (
	SELECT min(char_length(device_id)) FROM devices
  UNION ALL
	SELECT (SELECT min(char_length(device_id)) FROM devices WHERE char_length(device_id) > len.n)
	FROM len WHERE len.n IS NOT NULL
)
SELECT n,
	(SELECT reverse(device_id) FROM devices WHERE char_length(device_id) = n
		AND reverse(device_id) COLLATE "C" >= $1 COLLATE "C" ORDER BY reverse(device_id) COLLATE "C" LIMIT 1),
	(SELECT reverse(device_id) FROM devices WHERE char_length(device_id) = n
		AND reverse(device_id) COLLATE "C" < $1 COLLATE "C" ORDER BY reverse(device_id) COLLATE "C" DESC LIMIT 1)
FROM len WHERE n IS NOT NULL`

// childrenAndShape returns, in one round trip, the children of nodes (as
// children does) and the registry's shape for the query q.
func (db *DB) childrenAndShape(ctx context.Context, nodes []string, q []rune) (map[string][]rune, shape, error) {
	rq := slices.Clone(q)
	slices.Reverse(rq)
	b := &pgx.Batch{}
	b.Queue(childrenSQL, nodes)
	b.Queue(shapeSQL, string(rq))
	br := db.pool.SendBatch(ctx, b)
	defer br.Close()
	rows, err := br.Query()
	if err != nil {
		return nil, nil, err
	}
	kids, err := collectChildren(rows)
	if err != nil {
		return nil, nil, err
	}
	rows, err = br.Query()
	if err != nil {
		return nil, nil, err
	}
	sh := shape{}
	var n int
	var after, before *string
	if _, err := pgx.ForEachRow(rows, []any{&n, &after, &before}, func() error {
		sh[n] = 0
		for _, e := range []*string{after, before} {
			if e != nil {
				sh[n] = max(sh[n], commonPrefix(rq, []rune(*e)))
			}
		}
		return nil
	}); err != nil {
		return nil, nil, err
	}
	return kids, sh, br.Close()
}

// children returns the symbols that follow each of nodes in registered
// device ids; a node no id starts with has no entry.
func (db *DB) children(ctx context.Context, nodes []string) (map[string][]rune, error) {
	if len(nodes) == 0 {
		return map[string][]rune{}, nil
	}
	rows, err := db.pool.Query(ctx, childrenSQL, nodes)
	if err != nil {
		return nil, err
	}
	return collectChildren(rows)
}

// collectChildren reads childrenSQL's rows: a node and a symbol after it.
func collectChildren(rows pgx.Rows) (map[string][]rune, error) {
	out := map[string][]rune{}
	var node, c string
	_, err := pgx.ForEachRow(rows, []any{&node, &c}, func() error {
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

// rankSQL ranks the candidate device ids $2 against the query's id $1:
// the candidates are looked up by equality in the byte-ordered index and
// ranked from it alone (an index-only scan: device id and distance), and
// only the n ($4) kept within $3 edits are read from the table for their
// serials. Closest first, then by device id in byte order: the ids of a
// production line are consecutive, so the neighbours of a typed id come
// in their line's order.
const rankSQL = `WITH m AS MATERIALIZED (
	SELECT device_id, dist FROM (
		SELECT device_id, levenshtein_less_equal(device_id, $1, $3) AS dist FROM devices
		WHERE device_id COLLATE "C" = ANY($2::text[] COLLATE "C")
	) c WHERE dist <= $3 ORDER BY dist, device_id COLLATE "C" LIMIT $4
)
SELECT m.device_id, m.dist, d.serial FROM m JOIN devices d ON d.device_id = m.device_id
ORDER BY m.dist, m.device_id COLLATE "C"`

// rankNear returns up to n of the candidate device ids that are
// registered and within maxDist edits of id, closest first, then by
// device id (rankSQL).
func (db *DB) rankNear(ctx context.Context, id string, cands map[string]struct{}, maxDist, n int) ([]nearMatch, error) {
	list := make([]string, 0, len(cands))
	for c := range cands {
		if c != "" && len(c) <= 64 {
			list = append(list, c)
		}
	}
	if len(list) == 0 {
		return nil, nil
	}
	rows, err := db.pool.Query(ctx, rankSQL, id, list, maxDist, n)
	if err != nil {
		return nil, translate(err, "finding near matches")
	}
	var m nearMatch
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (nearMatch, error) {
		err := r.Scan(&m.id, &m.dist, &m.serial)
		return m, err
	})
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
			SELECT serial, device_id, levenshtein_less_equal(device_id, $1, $3) AS dist FROM devices
		) m WHERE dist <= $3 ORDER BY dist, device_id COLLATE "C" LIMIT $2`, id, n, nearDistance)
	if err != nil {
		return nil, translate(err, "finding near matches")
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, translate(err, "finding near matches")
	}
	return out, nil
}
