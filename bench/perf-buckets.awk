# Buckets `perf script` samples of byok (recorded with call graphs) by component.
# Usage: perf script -i perf.data --no-inline | awk -v requests=N -v hz=999 -f bench/perf-buckets.awk
# Every sample is attributed to exactly one bucket, by the first rule that matches its
# thread and call stack (the order below matters: the HTTP server is an ancestor of
# everything the handler does, so it is checked last). With `requests` (answered during
# the recording) it also prints CPU microseconds per request.

function bucket(comm, stack) {
  if (comm ~ /^sqlx-sqlite/) {
    if (stack ~ /do_fsync|fdatasync/) return "audit DB thread: fsync (CPU part only)"
    if (stack ~ /sqlite3_bind_parameter_name|sqlite3VListNumToName/) return "audit DB thread: sqlx binding ($N name lookup)"
    if (stack ~ /walWriteOneFrame|pagerWalFrames|unixWrite|pwrite/) return "audit DB thread: WAL page writes"
    if (stack ~ /sqlite3RunParser|sqlite3Prepare|sqlite3LockAndPrepare/) return "audit DB thread: SQL parse/prepare"
    if (stack ~ /sqlite3BtreeInsert|sqlite3VdbeExec/) return "audit DB thread: row + index inserts (VDBE/B-tree)"
    return "audit DB thread: other (sqlx worker, channels)"
  }
  if (stack ~ /byok_audit::/) return "audit: writer task + append/ack handoff (tokio side)"
  if (stack ~ /[^a-z_]sqlx/) return "sqlx async side (pool, statements)"
  if (stack ~ /phases::classify|byok_domain::family/) return "classify (request JSON parse, model family)"
  if (stack ~ /UsageTap|byok_providers::usage/) return "usage metering (response parse)"
  if (stack ~ /Redactor/) return "key redaction scan"
  if (stack ~ /phases::authenticate/) return "authenticate (token lookup)"
  if (stack ~ /phases::decrypt|byok_crypto|aes_gcm|byok_vault/) return "decrypt / vault"
  if (stack ~ /phases::inject|phases::route|phases::resolve/) return "route / resolve / inject"
  if (stack ~ /hyper_util::client|hyper::client/) return "upstream HTTP client (hyper client + its TCP)"
  if (stack ~ /MeteredBody|Meter::record/) return "metered response body"
  if (stack ~ /byok_proxy::/) return "other proxy handler code"
  if (stack ~ /hyper::proto|axum::|hyper_util::server/) return "downstream HTTP server (hyper/axum + its TCP)"
  if (stack ~ /tokio::runtime/) return "tokio scheduler, I/O driver, parking"
  return "other"
}

function flush() {
  if (comm == "") return
  b = bucket(comm, stack)
  count[b]++
  total++
  if (leaf ~ /^(_int_malloc|malloc|_int_free|cfree|free|malloc_consolidate|unlink_chunk|realloc|_int_realloc)/) mallocs++
  if (leafdso ~ /kernel/) kernel++
  comm = ""; stack = ""; leaf = ""; leafdso = ""
}

/^[^ \t]/ { flush(); comm = $1; next }
/^[ \t]+[0-9a-f]+ / {
  sym = $2
  if (leaf == "") { leaf = sym; leafdso = $NF }
  stack = stack " " sym
  next
}
/^$/ { flush() }
END {
  flush()
  if (total == 0) { print "no samples"; exit }
  if (hz == "") hz = 999
  printf "%-52s %8s %7s", "component (exclusive attribution)", "samples", "share"
  if (requests > 0) printf " %14s", "CPU us/request"
  printf "\n"
  n = 0
  for (b in count) { names[++n] = b }
  # sort by count, descending (insertion sort; few buckets)
  for (i = 2; i <= n; i++) { v = names[i]; j = i - 1; while (j > 0 && count[names[j]] < count[v]) { names[j + 1] = names[j]; j-- } names[j + 1] = v }
  for (i = 1; i <= n; i++) {
    b = names[i]
    printf "%-52s %8d %6.1f%%", b, count[b], 100 * count[b] / total
    if (requests > 0) printf " %14.1f", count[b] * 1e6 / hz / requests
    printf "\n"
  }
  printf "%-52s %8d %6.1f%%", "total", total, 100
  if (requests > 0) printf " %14.1f", total * 1e6 / hz / requests
  printf "\n\ncross-cutting: %.1f%% of samples in the kernel, %.1f%% in malloc/free\n", 100 * kernel / total, 100 * mallocs / total
}
