/* mailban.core._speedups: mailban's hottest loops in C, with the same results as the
 * Python they stand in for (which stays the reference, and is used where this is not built).
 *
 *   parse_header(bsd_cache, bsd_time, iso_cache, iso_time, parse_py, Header, [parser,] line)
 *       -> Header | None
 *       SyslogParser.parse: the common case (a BSD or RFC 3339 stamp, converted by the
 *       parser's own caches and methods, then `host prog[pid]: `) is cut here; every other line
 *       (the rarer stamps, none at all) goes to the Python parser, which decides it from
 *       scratch. So a line gets exactly the Header the Python parser gives it. read_header() is
 *       the same cut inside the loops. The time of the last line cut here is stored in the
 *       parser's `last` (what parse_py gives a line without a time) before parse_py runs and
 *       when a loop ends; parse_header does so when given the parser (reading in order).
 *
 *   One loop over lines, scan_walk(): the header cut, the filters covering the program (the
 *   FilterSet's dispatch table), each filter's first rule whose literal is in the line and whose
 *   regex matches (Python's own `re` objects, called from here, so every rule means what it
 *   means in Python), and the rule's builder; a sink takes what the builders make. Its two
 *   entry points differ only in the sink, as FilterSet.match_logged serves FilterSet and
 *   TallySet in Python:
 *
 *   match_lines(lines, lineno, ctx, source, all_lines, items[, quiet]) -> (lineno, parsed, last time)
 *       Pipeline.run and offline.matched_lines (replay, the tuning report, test --json): the
 *       Events of each line, from the rules' specs (filters.event_spec); a quiet rule's match
 *       (needs.py) builds nothing and is counted in `quiet`.
 *
 *   A rule that is a queue id then fixed text (shapes.py) is matched here without its regex
 *   (shape_match, the regex's own backtracking order), and so are Exim's arrival rules as
 *   exim-queue.toml ships them (arrival_match: the common forms of the line, any other is left to
 *   the regex); a filter whose rules all have shapes is matched without its literal scan
 *   (shapes.SHAPED_GROUP). shape_found(shape, line, pos) is that matcher for the tests.
 *
 *   tally(lines, lineno, ctx, per_rule, per_ip, first, pending, same, failure_stems)
 *       -> (lineno, parsed, matched, lines of covered programs no rule matched, whether one of
 *           them reads like a failure)
 *       scan.tally_lines for `mailban test`'s summary: a 3-field tally per match (TallySet's
 *       specs), counted at once, or left pending for correlation when it has a queue id.
 *
 *   One step of queue-id correlation, record_step() (Correlator._record), with two front ends,
 *   as Correlator.process and Correlator.address_of in Python:
 *
 *   correlate(correlator, events, header, Message, Event) -> events
 *       Pipeline.correlated: Correlator.process for one line's events.
 *
 *   merge(pending, fileno, offset, messages, ttl, max_messages, per_rule, per_ip, first)
 *       scan.PendingCounter.add: Correlator.address_of's correlation (records [time, address,
 *       queued]) and the summary's counting of the events tally() left pending, in file order.
 *
 *   seen(events, ((field index, set), ...), cap)
 *       replay's sets of the keys the logs show.
 *
 * Why C: profiling `mailban test` showed ~2.4 us of interpreter work per line around ~1 us of
 * regular-expression matching; this file removes most of the former (bench/README.md).
 * Must never: decide differently from the Python code (tests/test_speedups.py compares both on
 * generated and hostile lines), or keep a reference it does not own.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_TAG 96
/* Where each field of a records.Event sits: configure(Event._fields), which mailban.speedups
 * calls when it loads this module, looks each name up, so that the record's definition in Python
 * is the one source of truth (a field added or moved there cannot silently shift them here). */
enum { EV_TIME, EV_KIND, EV_FILTER, EV_RULE, EV_IP, EV_USER, EV_UID, EV_SENDER, EV_QUEUE_ID,
       EV_RECIPIENTS, EV_STATUS, EV_SOURCE, EV_LINENO, EV_LINE, EV_COUNT, EV_NAMES };
static const char *const ev_names[EV_NAMES] = {
    "time", "kind", "filter", "rule", "ip", "user", "uid", "sender", "queue_id", "recipients",
    "status", "source", "lineno", "line", "count"};
static Py_ssize_t ev[EV_NAMES];
static Py_ssize_t event_fields;  /* the Event's length; 0 until configure() */
#define MAX_event_fields 32

/* 0 when configure() ran, else -1 with an error set. */
static int
configured(void)
{
    if (event_fields > 0)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "_speedups.configure(Event._fields) was not called");
    return -1;
}

static PyObject *str_group, *int_one;
static PyObject *bytes_exim;  /* syslog.EXIM, the program of Exim's own log lines */
/* Interned names: Event kinds, and the attributes of Correlator and its Message records. */
static PyObject *str_submission, *str_removed, *str_queued, *str_user, *str_uid, *str_ip, *str_sender,
    *str_time, *str_remember, *str_messages, *str_sessions, *str_ttl, *str_max_messages, *str_dropped,
    *str_held, *str_unrecorded, *str_auth_failure, *str_reject, *str_rate_limit, *str_protocol, *str_last;

/* Cut `host prog[pid]: ` at `pos` exactly as syslog._HOST_TAG matches it, with parse()'s
 * MAX_TAG check. Returns 0 when the regex (or the check) would not accept the text. */
typedef struct {
    Py_ssize_t host, host_end, tag, tag_end, pid, pid_end, msg;
} Cut;

static int
cut_host_tag(const char *s, Py_ssize_t n, Py_ssize_t pos, Cut *c)
{
    Py_ssize_t i = pos;
    /* [^ :]{1,255} then a space: the longest run of such bytes, as the regex cannot end it
     * anywhere else (a shorter host would be followed by a host byte, not a space). */
    while (i < n && s[i] != ' ' && s[i] != ':')
        i++;
    if (i == pos || i - pos > 255 || i >= n || s[i] != ' ')
        return 0;
    c->host = pos;
    c->host_end = i;
    i++;
    /* [^ \[\]():]+ : again the longest run */
    Py_ssize_t t = i;
    while (i < n) {
        char b = s[i];
        if (b == ' ' || b == '[' || b == ']' || b == '(' || b == ')' || b == ':')
            break;
        i++;
    }
    if (i == t)
        return 0;
    c->tag = t;
    c->tag_end = i;
    c->pid = c->pid_end = -1;
    if (i < n && s[i] == '[') {
        /* (?:\[([0-9]+)\])? : without it, `: ` would have to start at the '[' */
        Py_ssize_t d = i + 1;
        while (d < n && s[d] >= '0' && s[d] <= '9')
            d++;
        if (d == i + 1 || d >= n || s[d] != ']')
            return 0;
        c->pid = i + 1;
        c->pid_end = d;
        i = d + 1;
    }
    if (i + 2 > n || s[i] != ':' || s[i + 1] != ' ')
        return 0;
    c->msg = i + 2;
    if (c->msg - t > MAX_TAG + 1)
        return 0;
    return 1;
}

/* fn(s[:n]): the parser's conversion of a stamp it has not cached yet (its _bsd_time or
 * _iso_time, which cache it): a new reference to the time, or to None (not a time), or NULL with
 * an error set. */
static PyObject *
stamp_time(PyObject *fn, const char *s, Py_ssize_t n)
{
    PyObject *stamp = PyBytes_FromStringAndSize(s, n);
    PyObject *when = stamp == NULL ? NULL : PyObject_CallOneArg(fn, stamp);
    Py_XDECREF(stamp);
    return when;
}

/* The cached time of a BSD line's stamp (borrowed), or NULL (no error set) when the line is not
 * of that form or its stamp is not cached yet: the Python parser decides those. */
static PyObject *
cached_bsd_time(PyObject *cache, const char *s, Py_ssize_t n)
{
    if (n < 20 || s[0] < 'A' || s[0] > 'Z' || s[15] != ' ')
        return NULL;
    PyObject *stamp = PyBytes_FromStringAndSize(s, 15);
    if (stamp == NULL)
        return NULL;
    PyObject *when = PyDict_GetItemWithError(cache, stamp);
    Py_DECREF(stamp);
    return when;
}

/* A bytes object for s[a:b], reusing *memo when it holds the same bytes (a log's lines share a
 * few hosts and program names: no new object, and dict lookups hit on identity). */
static PyObject *
memo_bytes(PyObject **memo, const char *s, Py_ssize_t a, Py_ssize_t b)
{
    Py_ssize_t len = b - a;
    PyObject *old = *memo;
    if (old != NULL && PyBytes_GET_SIZE(old) == len && memcmp(PyBytes_AS_STRING(old), s + a, len) == 0)
        return old;
    PyObject *fresh = PyBytes_FromStringAndSize(s + a, len);
    if (fresh == NULL)
        return NULL;
    Py_XDECREF(old);
    *memo = fresh;
    return fresh;
}

static PyObject *
new_header(PyTypeObject *type, PyObject *when, PyObject *host, PyObject *tag, PyObject *pid, Py_ssize_t msg)
{
    PyObject *start = PyLong_FromSsize_t(msg);
    if (start == NULL)
        return NULL;
    /* tuple.__new__(Header, ...): a tuple subclass instance with its five items. */
    PyObject *h = type->tp_alloc(type, 5);
    if (h == NULL) {
        Py_DECREF(start);
        return NULL;
    }
    Py_INCREF(when);
    Py_INCREF(host);
    Py_INCREF(tag);
    Py_INCREF(pid);
    PyTuple_SET_ITEM(h, 0, when);
    PyTuple_SET_ITEM(h, 1, host);
    PyTuple_SET_ITEM(h, 2, tag);
    PyTuple_SET_ITEM(h, 3, pid);
    PyTuple_SET_ITEM(h, 4, start);
    return h;
}

/* --- the walk over lines ------------------------------------------------------------------ */

typedef struct {
    PyObject *parser;  /* the SyslogParser; the five below are its (owned) */
    PyObject *bsd_cache, *bsd_time, *iso_cache, *iso_time, *parse;
    PyObject *dispatch, *rules_for, *ip_cache, *ip_fn, *unfold, *refold, *header_type;
    /* the loops only (NULL in parse_header): the parser's _to_epoch and its caches' bound
     * (SyslogParser.CACHE_MAX), for Exim's new seconds (exim_time); owned */
    PyObject *to_epoch;
    Py_ssize_t cache_max;
} Ctx;

static void
ctx_clear(Ctx *x)
{
    Py_CLEAR(x->bsd_cache);
    Py_CLEAR(x->bsd_time);
    Py_CLEAR(x->iso_cache);
    Py_CLEAR(x->iso_time);
    Py_CLEAR(x->parse);
    Py_CLEAR(x->to_epoch);
}

/* The parser's caches and methods that read_header() uses. 0, or -1 with an error set. */
static int
ctx_parser(Ctx *x)
{
    x->bsd_cache = PyObject_GetAttrString(x->parser, "_bsd_cache");
    x->bsd_time = PyObject_GetAttrString(x->parser, "_bsd_time");
    x->iso_cache = PyObject_GetAttrString(x->parser, "_iso_cache");
    x->iso_time = PyObject_GetAttrString(x->parser, "_iso_time");
    x->parse = PyObject_GetAttrString(x->parser, "parse_py");
    x->to_epoch = PyObject_GetAttrString(x->parser, "_to_epoch");
    PyObject *bound = PyObject_GetAttrString(x->parser, "CACHE_MAX");
    x->cache_max = bound == NULL ? -1 : PyLong_AsSsize_t(bound);
    Py_XDECREF(bound);
    if (x->bsd_cache == NULL || x->bsd_time == NULL || x->iso_cache == NULL || x->iso_time == NULL ||
        x->parse == NULL || x->to_epoch == NULL || x->cache_max < 1 ||
        !PyDict_Check(x->bsd_cache) || !PyDict_Check(x->iso_cache)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "not a SyslogParser");
        ctx_clear(x);
        return -1;
    }
    return 0;
}

/* What a loop over lines remembers from one line to the next (all owned). */
typedef struct {
    PyObject *host, *tag, *when;
    char stamp[15];  /* the BSD stamp `when` belongs to, when has_stamp */
    int has_stamp;
    /* Exim's stamp and its time, apart from the BSD one: a host's mainlog and its syslog
     * (dovecot's lines) are read together, and their lines alternate */
    PyObject *exim_when;
    char exim_stamp[19];
    int has_exim_stamp;
    /* the time of the last line cut here, not yet stored in the parser's `last` (dirty) */
    PyObject *last;
    int dirty;
} Memo;

static void
memo_clear(Memo *memo)
{
    Py_CLEAR(memo->host);
    Py_CLEAR(memo->tag);
    Py_CLEAR(memo->when);
    Py_CLEAR(memo->exim_when);
    Py_CLEAR(memo->last);
}

/* SyslogParser.last, the time a line without one gets while a file is read in order: parse_py
 * keeps it for the lines it decides; this stores the time of the last line cut here, before
 * parse_py runs and when a loop ends. 0, or -1 with an error set. */
static int
memo_sync(Ctx *x, Memo *memo)
{
    if (!memo->dirty || x->parser == NULL)
        return 0;
    memo->dirty = 0;
    return PyObject_SetAttr(x->parser, str_last, memo->last);
}

/* One line's header, as SyslogParser.parse gives it. Borrowed references: from the memo on the
 * fast path, from `header` (owned, set only when the Python parser decided) otherwise. */
typedef struct {
    PyObject *when, *host, *tag, *header;
    Py_ssize_t msg;
    Cut cut;
} Line;

/* Whether s[pos:] starts with an Exim message id and a space, as syslog._EXIM_ID matches it:
 * `1rKx2p-0004Ab-1F ` or 4.97's `1tAbCd-000000012Ab-1FGh `. */
static int
exim_id_at(const char *s, Py_ssize_t n, Py_ssize_t pos)
{
    static const unsigned char old_form[] = {6, 6, 2}, new_form[] = {6, 11, 4};
    for (int f = 0; f < 2; f++) {
        const unsigned char *runs = f == 0 ? old_form : new_form;
        Py_ssize_t i = pos;
        int ok = 1;
        for (int r = 0; ok && r < 3; r++) {
            for (int k = 0; k < runs[r]; k++, i++) {
                if (i >= n || !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z') ||
                                (s[i] >= 'a' && s[i] <= 'z'))) {
                    ok = 0;
                    break;
                }
            }
            if (ok && (i >= n || s[i] != (r < 2 ? '-' : ' ')))
                ok = 0;
            i++;
        }
        if (ok)
            return 1;
    }
    return 0;
}

/* The time of an Exim stamp `YYYY-MM-DD HH:MM:SS` (digits where digits go, checked by the
 * caller) that no cache holds, as parse_py's fast path finds it: SyslogParser._iso_time on
 * `YYYY-MM-DDTHH:MM:SS`, which is datetime.fromisoformat's check of the fields (year 1-9999,
 * month, day of that month, hour, minute, second 0-59) then `_to_epoch((Y, M, D, h, m, s))`.
 * The fields are read and checked here and _to_epoch is called directly: the Python around it
 * cost ~18,000 instructions per new second, and a mainlog read with dovecot's syslog has two
 * stamps per second (bench/README.md, Exim's fourth round). The time is cached under the
 * stamp's 19 bytes, as parse_py does. New reference; Py_None when the fields are no date (the
 * caller leaves the line to parse_py, as _iso_time's None did); NULL on error; and NULL with
 * no error when this cannot decide (no _to_epoch at hand, or one that gives no float): the
 * caller then calls _iso_time as before. */
static PyObject *
exim_time(Ctx *x, const char *s)
{
    if (x->to_epoch == NULL)
        return NULL;
    #define NUM2(i) ((s[i] - '0') * 10 + (s[(i) + 1] - '0'))
    long year = NUM2(0) * 100 + NUM2(2), month = NUM2(5), day = NUM2(8);
    long hh = NUM2(11), mm = NUM2(14), ss = NUM2(17);
    #undef NUM2
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (year < 1 || month < 1 || month > 12 || day < 1 || day > days[month - 1] + (month == 2 && leap) ||
        hh > 23 || mm > 59 || ss > 59)
        return Py_NewRef(Py_None);
    PyObject *t = Py_BuildValue("(llllll)", year, month, day, hh, mm, ss);
    PyObject *when = t == NULL ? NULL : PyObject_CallOneArg(x->to_epoch, t);
    Py_XDECREF(t);
    if (when == NULL)
        return NULL;
    if (!PyFloat_CheckExact(when)) {
        Py_DECREF(when);
        return NULL;
    }
    PyObject *key = PyBytes_FromStringAndSize(s, 19);
    if (key == NULL || (PyDict_GET_SIZE(x->iso_cache) >= x->cache_max && (PyDict_Clear(x->iso_cache), 0)) ||
        PyDict_SetItem(x->iso_cache, key, when) < 0) {
        Py_XDECREF(key);
        Py_DECREF(when);
        return NULL;
    }
    Py_DECREF(key);
    return when;
}

/* Exim's own log line, `YYYY-MM-DD HH:MM:SS ` (s[10] and s[19] spaces), as parse_py's fast path
 * and SyslogParser._exim read it: the stamp's time from the parser's iso_cache under its 19
 * bytes, then `[pid] ` or a message id; program `exim`, no host. 1 with *h filled; 0 for
 * everything else (a stamp not cached yet, a zone, neither a pid nor an id after the stamp:
 * dovecot's log_timestamp or a template), which parse_py decides; -1 on error. */
static int
exim_header(Ctx *x, Memo *memo, const char *s, Py_ssize_t n, Line *h)
{
    /* parse_py takes this path only when the line's first space within 40 bytes is at 10 */
    if (memchr(s, ' ', 10) != NULL)
        return 0;
    PyObject *when;
    if (memo->has_exim_stamp && memcmp(s, memo->exim_stamp, 19) == 0) {
        when = memo->exim_when;
    } else {
        PyObject *k = PyBytes_FromStringAndSize(s, 19);
        if (k == NULL)
            return -1;
        when = PyDict_GetItemWithError(x->iso_cache, k);
        Py_DECREF(k);
        if (when != NULL) {
            Py_INCREF(when);
        } else {
            if (PyErr_Occurred())
                return -1;
            /* A second not cached under this key yet (each new second of a mainlog: ~5% of its
             * lines, ~32,000 instructions each through parse_py): parse_py's _stamp reads it
             * with _ISO_SPACE and converts `YYYY-MM-DDTHH:MM:SS` with _iso_time, which caches
             * it under that key; the same call here. Anything else is parse_py's to decide. */
            static const char digit_at[19] = {1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 1};
            for (int i = 0; i < 19; i++)
                if (digit_at[i] && !(s[i] >= '0' && s[i] <= '9'))
                    return 0;
            if (s[4] != '-' || s[7] != '-' || s[13] != ':' || s[16] != ':')
                return 0;
            when = exim_time(x, s);
            if (when == NULL && PyErr_Occurred())
                return -1;
            if (when == NULL) {
                char iso[19];
                memcpy(iso, s, 19);
                iso[10] = 'T';
                when = stamp_time(x->iso_time, iso, 19);
                if (when == NULL)
                    return -1;
            }
            if (when == Py_None) {
                Py_DECREF(when);
                return 0;
            }
        }
        Py_XSETREF(memo->exim_when, when);  /* the reference taken above */
        memcpy(memo->exim_stamp, s, 19);
        memo->has_exim_stamp = 1;
    }
    /* _EXIM_ZONE_PID: a zone makes the time another (parse_py converts it) */
    Py_ssize_t pos = 20;
    if (s[pos] == '+' || s[pos] == '-')
        return 0;
    Cut *c = &h->cut;
    c->pid = c->pid_end = -1;
    if (s[pos] == '[') {
        Py_ssize_t d = pos + 1;
        while (d < n && d - pos <= 10 && s[d] >= '0' && s[d] <= '9')
            d++;
        if (d > pos + 1 && d - pos <= 11 && d + 1 < n && s[d] == ']' && s[d + 1] == ' ') {
            c->pid = pos + 1;
            c->pid_end = d;
            pos = d + 2;
        }
    }
    if (c->pid < 0 && !exim_id_at(s, n, pos))
        return 0;
    h->when = when;
    h->host = Py_None;
    h->tag = bytes_exim;
    h->msg = c->msg = pos;
    if (x->parser != NULL) {
        Py_XSETREF(memo->last, Py_NewRef(when));
        memo->dirty = 1;
    }
    return 1;
}

/* 1: the line has a header (in *h); 0: it has none; -1: error. */
static int
read_header(Ctx *x, Memo *memo, PyObject *line, const char *s, Py_ssize_t n, Line *h)
{
    PyObject *when = NULL;
    Py_ssize_t pos = 16;
    h->header = NULL;
    /* Consecutive lines mostly share their second: reuse the last stamp's time (the cache
     * cannot change its mind within one call, `now` being fixed). */
    if (memo->has_stamp && n >= 20 && s[15] == ' ' && memcmp(s, memo->stamp, 15) == 0) {
        when = memo->when;
    } else if (n >= 21 && s[10] == ' ' && s[19] == ' ' && s[0] >= '0' && s[0] <= '9') {
        /* Exim's own log (`YYYY-MM-DD HH:MM:SS `, then `[pid] ` or a message id) */
        int got = exim_header(x, memo, s, n, h);
        if (got != 0)
            return got;
        goto python;
    } else if (n >= 20 && s[0] >= '0' && s[0] <= '9') {
        /* RFC 3339, as parse_py and _iso_time: the stamp ends at the first space within 40
         * bytes; its whole seconds and zone are cached, the fraction added. */
        const char *space = memchr(s, ' ', n < 40 ? (size_t)n : 40);
        Py_ssize_t end = space == NULL ? -1 : space - s;
        if (end < 19)
            goto python;  /* `2019-10-15 08:08:52`, or no header: parse_py decides */
        Py_ssize_t zone = 19;
        double frac = 0.0;
        if (end > 19 && (s[19] == '.' || s[19] == ',')) {
            Py_ssize_t d = 20;
            while (d < end && s[d] >= '0' && s[d] <= '9')
                d++;
            if (d > 20) {
                char digits[48] = "0.";
                memcpy(digits + 2, s + 20, (size_t)(d - 20));  /* d - 20 < 20: end < 40 */
                digits[2 + d - 20] = '\0';
                frac = PyOS_string_to_double(digits, NULL, NULL);
                if (frac == -1.0 && PyErr_Occurred())
                    return -1;
            }
            zone = d;
        }
        char key[40];
        memcpy(key, s, 19);
        memcpy(key + 19, s + zone, (size_t)(end - zone));
        PyObject *k = PyBytes_FromStringAndSize(key, 19 + end - zone);
        PyObject *whole = k == NULL ? NULL : PyDict_GetItemWithError(x->iso_cache, k);
        Py_XDECREF(k);
        if (whole != NULL) {
            when = PyFloat_FromDouble(PyFloat_AsDouble(whole) + frac);
        } else {
            if (PyErr_Occurred())
                return -1;
            when = stamp_time(x->iso_time, s, end);
        }
        if (when == NULL)
            return -1;
        if (when == Py_None) {
            Py_DECREF(when);
            goto python;  /* not RFC 3339: parse_py tries the other forms */
        }
        Py_XSETREF(memo->when, when);
        memo->has_stamp = 0;
        pos = end + 1;
    } else {
        when = cached_bsd_time(x->bsd_cache, s, n);
        if (when != NULL) {
            Py_INCREF(when);
        } else if (PyErr_Occurred()) {
            return -1;
        } else if (n >= 20 && s[0] >= 'A' && s[0] <= 'Z' && s[15] == ' ') {
            /* A new second: SyslogParser._bsd_time converts (and caches) the stamp, as
             * parse_py would; None means no header, which is parse_py's answer too. */
            when = stamp_time(x->bsd_time, s, 15);
            if (when == NULL)
                return -1;
            if (when == Py_None) {
                Py_DECREF(when);
                goto python;  /* e.g. `Sep 8 08:00:01  h`: parse_py tries the other forms */
            }
        }
        if (when != NULL) {
            Py_XSETREF(memo->when, when);
            memcpy(memo->stamp, s, 15);
            memo->has_stamp = 1;
        }
    }
    if (when != NULL && cut_host_tag(s, n, pos, &h->cut)) {
        h->when = when;
        h->host = memo_bytes(&memo->host, s, h->cut.host, h->cut.host_end);
        h->tag = memo_bytes(&memo->tag, s, h->cut.tag, h->cut.tag_end);
        h->msg = h->cut.msg;
        if (x->parser != NULL) {
            Py_XSETREF(memo->last, Py_NewRef(when));
            memo->dirty = 1;
        }
        return h->host == NULL || h->tag == NULL ? -1 : 1;
    }
python:
    /* parse_py reads `last` (a line without a time) and keeps it (a line with one) */
    if (memo_sync(x, memo) < 0)
        return -1;
    PyObject *header = PyObject_CallOneArg(x->parse, line);
    if (header == NULL)
        return -1;
    if (header == Py_None) {
        Py_DECREF(header);
        return 0;
    }
    if (!PyTuple_Check(header) || PyTuple_GET_SIZE(header) != 5) {
        Py_DECREF(header);
        PyErr_SetString(PyExc_TypeError, "parse() must return a Header");
        return -1;
    }
    h->header = header;
    h->when = PyTuple_GET_ITEM(header, 0);
    h->host = PyTuple_GET_ITEM(header, 1);
    h->tag = PyTuple_GET_ITEM(header, 2);
    h->msg = PyLong_AsSsize_t(PyTuple_GET_ITEM(header, 4));
    if (h->msg == -1 && PyErr_Occurred()) {
        Py_CLEAR(h->header);
        return -1;
    }
    return 1;
}

/* The Header of a line read_header() accepted: the Python parser's, or one built from the cut
 * (tuple.__new__(Header, ...)). New reference. */
static PyObject *
header_of(PyObject *type, Line *h, const char *s)
{
    if (h->header != NULL)
        return Py_NewRef(h->header);
    Cut *c = &h->cut;
    PyObject *pid = c->pid >= 0 ? PyBytes_FromStringAndSize(s + c->pid, c->pid_end - c->pid)
                                : Py_NewRef(Py_None);
    PyObject *header = pid == NULL ? NULL : new_header((PyTypeObject *)type, h->when, h->host, h->tag, pid, h->msg);
    Py_XDECREF(pid);
    return header;
}

/* SyslogParser.parse: parse_header(bsd_cache, _bsd_time, iso_cache, _iso_time, parse_py,
 * Header, [parser,] line), the parser's own caches and methods bound by functools.partial; with
 * the parser (reading a file in order), a line cut here stores its time in the parser's `last`. */
static PyObject *
parse_header(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7 && nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "parse_header(bsd_cache, bsd_time, iso_cache, iso_time, parse_py, Header, [parser,] line)");
        return NULL;
    }
    /* Borrowed from the arguments: not cleared with ctx_clear(). */
    Ctx x = {.bsd_cache = args[0], .bsd_time = args[1], .iso_cache = args[2], .iso_time = args[3],
             .parse = args[4], .header_type = args[5], .parser = nargs == 8 ? args[6] : NULL};
    PyObject *line = args[nargs - 1];
    if (!PyDict_Check(x.bsd_cache) || !PyDict_Check(x.iso_cache) || !PyType_Check(x.header_type) ||
        !PyBytes_Check(line))
        return PyObject_CallOneArg(x.parse, line);
    const char *s = PyBytes_AS_STRING(line);
    Memo memo = {0};
    Line h = {0};
    int got = read_header(&x, &memo, line, s, PyBytes_GET_SIZE(line), &h);
    PyObject *header = got < 0 ? NULL : got == 0 ? Py_NewRef(Py_None) : header_of(x.header_type, &h, s);
    if (header != NULL && memo_sync(&x, &memo) < 0)
        Py_CLEAR(header);
    Py_XDECREF(h.header);
    memo_clear(&memo);
    return header;
}

/* literals.literal_index's table: uint64 m, uint64 mask, uint64 cand[256], uint8 shift[4096]. */
#define INDEX_WIDTH 64
#define INDEX_SHIFTS 4096
#define INDEX_CANDS 256
#define INDEX_SIZE (8 * (2 + INDEX_CANDS) + INDEX_SHIFTS)

/* Whether a group's index is shapes.SHAPED_GROUP, b"S": every rule of the group has a shape (which
 * first_rule checks as it reads them). */
static inline int
shaped_group(PyObject *index)
{
    return PyBytes_Check(index) && PyBytes_GET_SIZE(index) == 1 && PyBytes_AS_STRING(index)[0] == 'S';
}

/* The filter groups covering the line's program (FilterSet._dispatch, else rules_for()). New
 * reference, a tuple of 5-tuples. */
static PyObject *
groups_for(Ctx *x, PyObject *tag)
{
    PyObject *groups = PyDict_GetItemWithError(x->dispatch, tag);
    if (groups != NULL) {
        Py_INCREF(groups);
    } else {
        if (PyErr_Occurred())
            return NULL;
        if ((groups = PyObject_CallOneArg(x->rules_for, tag)) == NULL)
            return NULL;
    }
    if (!PyTuple_Check(groups)) {
        Py_DECREF(groups);
        PyErr_SetString(PyExc_TypeError, "rules_for() must return a tuple");
        return NULL;
    }
    for (Py_ssize_t g = 0; g < PyTuple_GET_SIZE(groups); g++) {
        /* (combined, markers, joined, rules, specs, literal index): first_rule() reads the last
         * three */
        PyObject *group = PyTuple_GET_ITEM(groups, g), *rules, *specs, *index;
        if (!PyTuple_Check(group) || PyTuple_GET_SIZE(group) != 6 ||
            !PyTuple_Check(rules = PyTuple_GET_ITEM(group, 3)) || !PyTuple_Check(specs = PyTuple_GET_ITEM(group, 4)) ||
            PyTuple_GET_SIZE(rules) != PyTuple_GET_SIZE(specs) ||
            ((index = PyTuple_GET_ITEM(group, 5)) != Py_None &&
             (!PyBytes_Check(index) || (PyBytes_GET_SIZE(index) != INDEX_SIZE && !shaped_group(index))))) {
            Py_DECREF(groups);
            PyErr_SetString(PyExc_TypeError,
                            "a dispatch group must be (combined, markers, joined, rules, specs, literal index), "
                            "its rules all shaped when the index is shapes.SHAPED_GROUP");
            return NULL;
        }
    }
    return groups;
}

/* What a rule matched: a regex match object, or (m NULL) a shape's match (shapes.py): the queue
 * id s[qa:qb] and, for an arrival shape, the sender, the client's address and the account
 * (-1: the group did not take part). */
typedef struct {
    PyObject *m;
    const char *s;
    Py_ssize_t qa, qb, sa, sb, ia, ib, ua, ub;
} Found;

static PyObject *
span_bytes(const char *s, Py_ssize_t a, Py_ssize_t b)
{
    if (a < 0)
        return Py_NewRef(Py_None);
    return PyBytes_FromStringAndSize(s + a, b - a);
}

/* m.group(name); for a shape, the groups it has (qid; sender, ip, user for an arrival shape;
 * -1 spans read as a group that did not take part), any other name gets None as a group that
 * did not take part (the specs name no other group of such a rule). */
static PyObject *
match_group(Found *f, PyObject *name)
{
    if (f->m != NULL)
        return PyObject_CallMethodOneArg(f->m, str_group, name);
    if (!PyUnicode_Check(name))
        return Py_NewRef(Py_None);
    if (PyUnicode_CompareWithASCIIString(name, "qid") == 0)
        return PyBytes_FromStringAndSize(f->s + f->qa, f->qb - f->qa);
    if (PyUnicode_CompareWithASCIIString(name, "ip") == 0)
        return span_bytes(f->s, f->ia, f->ib);
    if (PyUnicode_CompareWithASCIIString(name, "user") == 0)
        return span_bytes(f->s, f->ua, f->ub);
    if (PyUnicode_CompareWithASCIIString(name, "sender") == 0)
        return span_bytes(f->s, f->sa, f->sb);
    return Py_NewRef(Py_None);
}

/* The shapes of shapes.py: [prefix kind, end kind, len(TEXT), len(MORE), TEXT, MORE]. */
static inline int
is_alnum(unsigned char c)
{
    /* [0-9A-Za-z]: two unsigned range checks (c | 32 folds A-Z onto a-z) */
    return (unsigned)(c - '0') < 10u || (unsigned)((c | 32) - 'a') < 26u;
}

/* memcmp(a, b, len) == 0 for the few bytes of a shape's text or a field name: a loop costs less
 * than the call into libc's memcmp for 2-10 bytes */
static inline int
same_bytes(const unsigned char *a, const unsigned char *b, Py_ssize_t len)
{
    for (Py_ssize_t i = 0; i < len; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

static inline int
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* n bytes of [0-9] at s[p:] */
static inline int
digits_at(const unsigned char *s, Py_ssize_t n, Py_ssize_t p, Py_ssize_t count)
{
    if (p + count > n)
        return 0;
    for (Py_ssize_t i = 0; i < count; i++)
        if (!is_digit(s[p + i]))
            return 0;
    return 1;
}

static inline int
alnums_at(const unsigned char *s, Py_ssize_t n, Py_ssize_t p, Py_ssize_t count)
{
    if (p + count > n)
        return 0;
    for (Py_ssize_t i = 0; i < count; i++)
        if (!is_alnum(s[p + i]))
            return 0;
    return 1;
}

/* `$` (no MULTILINE) at p: the end, or a final newline */
static inline int
end_at(const unsigned char *s, Py_ssize_t n, Py_ssize_t p)
{
    return p == n || (p == n - 1 && s[p] == '\n');
}

/* Where shapes.EXIM_PREFIX's match ends from p: two possessive groups, each taken whole or not
 * at all. The stamp `YYYY-MM-DD HH:MM:SS`, `.mmm` if there (the regex has no other way on
 * from a `.`), then ` +zzzz` if a space follows it, else (the group's other way) the space
 * that starts it; then `[pid] ` with 1 to 10 digits. */
static Py_ssize_t
exim_prefix_end(const unsigned char *s, Py_ssize_t n, Py_ssize_t p)
{
    Py_ssize_t q = p;
    if (digits_at(s, n, q, 4) && q + 19 <= n && s[q + 4] == '-' && digits_at(s, n, q + 5, 2) && s[q + 7] == '-' &&
        digits_at(s, n, q + 8, 2) && s[q + 10] == ' ' && digits_at(s, n, q + 11, 2) && s[q + 13] == ':' &&
        digits_at(s, n, q + 14, 2) && s[q + 16] == ':' && digits_at(s, n, q + 17, 2)) {
        Py_ssize_t r = q + 19;
        if (r < n && s[r] == '.' && digits_at(s, n, r + 1, 3))
            r += 4;
        if (r + 6 < n && s[r] == ' ' && (s[r + 1] == '-' || s[r + 1] == '+') && digits_at(s, n, r + 2, 4) &&
            s[r + 6] == ' ')
            q = r + 7;
        else if (r < n && s[r] == ' ')
            q = r + 1;
    }
    if (q < n && s[q] == '[') {
        Py_ssize_t d = 0;
        while (d < 10 && q + 1 + d < n && is_digit(s[q + 1 + d]))
            d++;
        if (d >= 1 && q + 2 + d < n && s[q + 1 + d] == ']' && s[q + 2 + d] == ' ')
            q += d + 3;
    }
    return q;
}

/* Whether what follows the queue id (TEXT, then the end the shape asks for) matches at p. */
static int
shape_rest(const unsigned char *shape, const unsigned char *s, Py_ssize_t n, Py_ssize_t p)
{
    Py_ssize_t tlen = shape[2], mlen = shape[3];
    const unsigned char *text = shape + 4, *more = shape + 4 + tlen;
    if (p + tlen > n || !same_bytes(s + p, text, tlen))
        return 0;
    p += tlen;
    if (shape[1] == 0)
        return 1;
    if (shape[1] == 2 && p + mlen <= n && same_bytes(s + p, more, mlen)) {
        /* (?:MORE\S+|)$: the longest run of \S first, then each shorter one (>= 1) */
        Py_ssize_t a = p + mlen, b = a;
        while (b < n && !(s[b] == ' ' || (s[b] >= '\t' && s[b] <= '\r')))
            b++;
        for (Py_ssize_t e = b; e > a; e--)
            if (end_at(s, n, e))
                return 1;
    }
    return end_at(s, n, p);
}

/* 1 when `shape` is a shape as shapes.rule_shape makes them, else 0 with an error set. */
static inline int
valid_shape(PyObject *shape)
{
    const unsigned char *h = (const unsigned char *)(PyBytes_Check(shape) ? PyBytes_AS_STRING(shape) : NULL);
    if (h == NULL || PyBytes_GET_SIZE(shape) < 4 || h[0] > 1 || h[1] > 5 || (h[1] < 3 && h[2] == 0) ||
        (h[1] >= 3 && (h[0] != 1 || h[2] != 0 || h[3] != 0)) ||
        PyBytes_GET_SIZE(shape) != 4 + (Py_ssize_t)h[2] + (Py_ssize_t)h[3]) {
        PyErr_SetString(PyExc_TypeError, "not a rule shape (shapes.rule_shape)");
        return 0;
    }
    return 1;
}

/* Where <QID> can end from p, in the regex's order: 6-6-2, 6-11-4 (Exim's two formats), then 5
 * to 20 letters and digits, longest first (p + run down to p + 5; every one but the longest is
 * followed by a letter or digit). Read once per line and prefix for all of a filter's shapes
 * (first_rule). */
typedef struct {
    Py_ssize_t p;  /* where the id starts: after the prefix */
    int k;         /* the Exim formats that read here, their ends in ends[] */
    Py_ssize_t ends[2];
    Py_ssize_t run;  /* letters and digits from p, at most 20 */
} QidAt;

static void
qid_readings(const unsigned char *s, Py_ssize_t n, Py_ssize_t p, QidAt *q)
{
    Py_ssize_t run = 0;
    while (run < 20 && p + run < n && is_alnum(s[p + run]))
        run++;
    q->p = p;
    q->k = 0;
    q->run = run;
    if (run == 6 && p + 6 < n && s[p + 6] == '-') {
        if (alnums_at(s, n, p + 7, 6) && p + 13 < n && s[p + 13] == '-' && alnums_at(s, n, p + 14, 2))
            q->ends[q->k++] = p + 16;
        if (alnums_at(s, n, p + 7, 11) && p + 18 < n && s[p + 18] == '-' && alnums_at(s, n, p + 19, 4))
            q->ends[q->k++] = p + 23;
    }
}

/* The i-th end of <QID>'s readings (i from 0), or -1 past the last. `first`, the byte the rest
 * starts with: when it is no letter or digit only the longest run can be followed by it, and the
 * shorter ones are not tried (the same answer, fewer tries). */
static inline Py_ssize_t
qid_end(const QidAt *q, int i, unsigned char first)
{
    if (i < q->k)
        return q->ends[i];
    Py_ssize_t len = q->run - (i - q->k);
    if (len < 5 || (len < q->run && !is_alnum(first)))
        return -1;
    return q->p + len;
}

/* A queue shape's match after the prefix (q: the id's readings): 1 with the queue id's span in
 * *qa, *qb, or 0. The first reading the shape's rest follows wins, as in the regex. */
static int
shape_from(const unsigned char *shape, const unsigned char *s, Py_ssize_t n, const QidAt *q,
           Py_ssize_t *qa, Py_ssize_t *qb)
{
    Py_ssize_t end;
    for (int i = 0; (end = qid_end(q, i, shape[4])) >= 0; i++)
        if (end < n && s[end] == shape[4] && shape_rest(shape, s, n, end)) {
            *qa = q->p;
            *qb = end;
            return 1;
        }
    return 0;
}

/* A shape's match at s[pos:] (the regex's `match(line, pos)`): shape_from after the prefix. */
static int
shape_match(const unsigned char *shape, const unsigned char *s, Py_ssize_t n, Py_ssize_t pos,
            Py_ssize_t *qa, Py_ssize_t *qb)
{
    QidAt q;
    qid_readings(s, n, shape[0] == 1 ? exim_prefix_end(s, n, pos) : pos, &q);
    return shape_from(shape, s, n, &q, qa, qb);
}

/* The arrival shapes of shapes.py (end kind 3, 4, 5: exim-queue's `arrival-auth`, `arrival` and
 * `local` rules as shipped). Their regexes are possessive or, where not, every way back the regex
 * could take ends on a byte that cannot follow (each optional field starts with a space and a
 * name no later field starts with; every greedy run is followed by a byte its class excludes), so
 * reading them forward gives the regex's match, or its failure. The client is read in its common
 * forms only: for any other (`H=H=`, a name or HELO cut short or holding other bytes, an address
 * of the wrong length) arrival_match says ARRIVAL_REGEX and the caller runs the rule's regex,
 * which then decides. tests/test_shapes.py compares it with the regexes. */
#define ARRIVAL_REGEX (-1)

static int contains(const char *s, Py_ssize_t n, const char *lit, Py_ssize_t llen);

/* \s of a bytes regex: space, \t \n \v \f \r */
static inline int
is_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

static inline int
is_word(unsigned char c)
{
    return is_alnum(c) || c == '_';
}

static inline int
lit_at(const unsigned char *s, Py_ssize_t n, Py_ssize_t p, const char *text, Py_ssize_t len)
{
    return p + len <= n && same_bytes(s + p, (const unsigned char *)text, len);
}
#define LIT_AT(s, n, p, text) lit_at(s, n, p, text, (Py_ssize_t)sizeof text - 1)

/* the end of a run of \S from p (possibly p itself) */
static inline Py_ssize_t
nonspace_end(const unsigned char *s, Py_ssize_t n, Py_ssize_t p)
{
    while (p < n && !is_space(s[p]))
        p++;
    return p;
}

/* patterns.py's <EXIMHOST> after `H=` at p, its common form only: `name `, `(helo) `, then
 * `[ip]` or `[IPv6:ip]` (2-45 of [0-9A-Fa-f:.]), `:port`, ` I=[ip]:port`, ` U=ident`, ` Ci=N`
 * (each a field the next cannot start with, and each run followed by a byte it excludes). Where it ends, with the ip span in
 * o; ARRIVAL_REGEX for any other form. */
static Py_ssize_t
exim_host_at(const unsigned char *s, Py_ssize_t n, Py_ssize_t p, Found *o)
{
    Py_ssize_t q;
    if (LIT_AT(s, n, p, "H="))
        return ARRIVAL_REGEX;
    if (p < n && is_word(s[p])) {  /* \w[\w./-]* then a space */
        for (q = p + 1; q < n && (is_word(s[q]) || s[q] == '.' || s[q] == '/' || s[q] == '-'); q++)
            ;
        if (q >= n || s[q] != ' ')
            return ARRIVAL_REGEX;
        p = q + 1;
    }
    if (p < n && s[p] == '(') {  /* \([^\s()]*\) then a space */
        for (q = p + 1; q < n && !is_space(s[q]) && s[q] != '(' && s[q] != ')'; q++)
            ;
        if (!(q + 1 < n && s[q] == ')' && s[q + 1] == ' '))
            return ARRIVAL_REGEX;
        p = q + 2;
    }
    if (!(p < n && s[p] == '['))
        return ARRIVAL_REGEX;
    p++;
    if (LIT_AT(s, n, p, "IPv6:"))
        p += 5;
    for (q = p; q < n && q - p <= 45 && (is_digit(s[q]) || (s[q] >= 'A' && s[q] <= 'F') ||
                                         (s[q] >= 'a' && s[q] <= 'f') || s[q] == ':' || s[q] == '.'); q++)
        ;
    if (q - p < 2 || q - p > 45 || q >= n || s[q] != ']')
        return ARRIVAL_REGEX;
    o->ia = p;
    o->ib = q;
    p = q + 1;
    if (p < n && s[p] == ':') {  /* (?::\d+)? */
        for (q = p + 1; q < n && is_digit(s[q]); q++)
            ;
        if (q == p + 1)
            return ARRIVAL_REGEX;
        p = q;
    }
    if (LIT_AT(s, n, p, " I=[")) {  /* (?: I=\[[0-9A-Fa-f:.]+\](?::\d+)?)? */
        for (q = p + 4; q < n && (is_digit(s[q]) || (s[q] >= 'A' && s[q] <= 'F') || (s[q] >= 'a' && s[q] <= 'f') ||
                                  s[q] == ':' || s[q] == '.'); q++)
            ;
        if (q == p + 4 || q >= n || s[q] != ']')
            return ARRIVAL_REGEX;
        p = q + 1;
        if (p < n && s[p] == ':') {
            for (q = p + 1; q < n && is_digit(s[q]); q++)
                ;
            if (q == p + 1)
                return ARRIVAL_REGEX;
            p = q;
        }
    }
    if (LIT_AT(s, n, p, " U="))  /* (?: U=\S*)?: what follows starts with a space */
        p = nonspace_end(s, n, p + 3);
    if (LIT_AT(s, n, p, " Ci=")) {  /* (?: Ci=\d+)? */
        for (q = p + 4; q < n && is_digit(s[q]); q++)
            ;
        if (q == p + 4)
            return ARRIVAL_REGEX;
        p = q;
    }
    return p;
}

/* An optional ` NAME=\S++` field at p (NAME= given with its space): where it ends, p if not there. */
static inline Py_ssize_t
field_at(const unsigned char *s, Py_ssize_t n, Py_ssize_t p, const char *name, Py_ssize_t len)
{
    if (!lit_at(s, n, p, name, len))
        return p;
    Py_ssize_t e = nonspace_end(s, n, p + len);
    return e > p + len ? e : p;
}
#define FIELD_AT(s, n, p, name) field_at(s, n, p, name, (Py_ssize_t)sizeof name - 1)

/* The rule's text after the sender, from q: 1, 0 or ARRIVAL_REGEX (see above). */
static int
arrival_tail(int kind, const unsigned char *s, Py_ssize_t n, Py_ssize_t q, Found *o)
{
    Py_ssize_t e, r;
    o->ia = o->ib = o->ua = o->ub = -1;
    if (kind == 5) {  /* ` U=(?P<user>[^\s]+) P=local(?:-e?smtp|-bsmtp|) ` */
        if (!LIT_AT(s, n, q, " U="))
            return 0;
        e = nonspace_end(s, n, q + 3);
        if (e == q + 3 || !LIT_AT(s, n, e, " P=local"))
            return 0;
        r = e + 8;
        if (!(LIT_AT(s, n, r, "-esmtp ") || LIT_AT(s, n, r, "-smtp ") || LIT_AT(s, n, r, "-bsmtp ") ||
              (r < n && s[r] == ' ')))
            return 0;
        o->ua = q + 3;
        o->ub = e;
        return 1;
    }
    /* `(?: R=\S++|) H=<EXIMHOST> P=\S++`: without the R= field ` H=` would have to start where
     * ` R=` does */
    if (LIT_AT(s, n, q, " R=")) {
        e = nonspace_end(s, n, q + 3);
        if (e == q + 3)
            return 0;
        q = e;
    }
    if (!LIT_AT(s, n, q, " H="))
        return 0;
    q = exim_host_at(s, n, q + 3, o);
    if (q < 0)
        return ARRIVAL_REGEX;
    /* from here every field is read as the regex reads it, so a field missing or cut short is
     * the regex's no match too */
    if (!LIT_AT(s, n, q, " P="))
        return 0;
    e = nonspace_end(s, n, q + 3);
    if (e == q + 3)
        return 0;
    if (kind == 4)  /* `arrival`: then a space */
        return e < n && s[e] == ' ' ? 1 : 0;
    /* `arrival-auth`: (?: L[*.]?-?|)(?: X=\S++|)(?: CV=\S++|)(?: DN="[^"\n]*+"|)(?: SNI=\S++|)
     * A=[^\s:]++:(?P<user>[^\s:]++)(?::\S*+|)(?: PRDR|)(?: PRX=\S++|)(?: K|) S=\d++(?: |$) */
    if (LIT_AT(s, n, e, " L")) {
        e += 2;
        if (e < n && (s[e] == '*' || s[e] == '.'))
            e++;
        if (e < n && s[e] == '-')
            e++;
    }
    e = FIELD_AT(s, n, e, " X=");
    e = FIELD_AT(s, n, e, " CV=");
    if (LIT_AT(s, n, e, " DN=\"")) {
        for (r = e + 5; r < n && s[r] != '"' && s[r] != '\n'; r++)
            ;
        if (r < n && s[r] == '"')
            e = r + 1;
    }
    e = FIELD_AT(s, n, e, " SNI=");
    if (!LIT_AT(s, n, e, " A="))
        return 0;
    for (r = e + 3; r < n && !is_space(s[r]) && s[r] != ':'; r++)
        ;
    if (r == e + 3 || r >= n || s[r] != ':')
        return 0;
    Py_ssize_t ua = r + 1;
    for (r = ua; r < n && !is_space(s[r]) && s[r] != ':'; r++)
        ;
    if (r == ua)
        return 0;
    Py_ssize_t ub = r;
    if (r < n && s[r] == ':')
        r = nonspace_end(s, n, r + 1);
    if (LIT_AT(s, n, r, " PRDR"))
        r += 5;
    r = FIELD_AT(s, n, r, " PRX=");
    if (LIT_AT(s, n, r, " K"))
        r += 2;
    if (!LIT_AT(s, n, r, " S="))
        return 0;
    for (e = r + 3; e < n && is_digit(s[e]); e++)
        ;
    if (e == r + 3 || !(e == n || s[e] == ' ' || (e == n - 1 && s[e] == '\n')))
        return 0;
    o->ua = ua;
    o->ub = ub;
    return 1;
}

/* <EXIMSENDER> at p, then the rest: `<>` (no sender) first, as the regex's alternation, then the
 * sender. */
static int
arrival_sender(int kind, const unsigned char *s, Py_ssize_t n, Py_ssize_t p, Found *o)
{
    if (LIT_AT(s, n, p, "<>")) {
        o->sa = o->sb = -1;
        int r = arrival_tail(kind, s, n, p + 2, o);
        if (r != 0)
            return r;
    }
    /* (?:[^\s"]++|"(?:[^"\\\n]++|\\.)*+")++, possessive throughout: runs without space or quote
     * and quoted strings (a backslash takes any byte after it, DOTALL), as long as they come; an
     * unclosed quote ends the sender before it */
    Py_ssize_t e = p;
    while (e < n) {
        if (!is_space(s[e]) && s[e] != '"') {
            e++;
            continue;
        }
        if (s[e] != '"')
            break;
        Py_ssize_t q = e + 1;
        while (q < n && s[q] != '"' && s[q] != '\n')
            q += s[q] == '\\' ? (q + 1 < n ? 2 : n) : 1;
        if (!(q < n && s[q] == '"'))
            break;
        e = q + 1;
    }
    if (e == p)
        return 0;
    o->sa = p;
    o->sb = e;
    return arrival_tail(kind, s, n, e, o);
}

/* An arrival shape's match after the prefix (q: the id's readings): 1 with the spans in o, 0,
 * or ARRIVAL_REGEX; each reading that ` <= ` follows tried in turn. `arrival-auth` on a line
 * without its fixed text ` A=` is no match (its rule's literal: most arrivals hold none, and
 * reading one up to where A= would be costs more than looking for it). */
static int
arrival_from(int kind, const unsigned char *s, Py_ssize_t n, const QidAt *q, Found *o)
{
    Py_ssize_t end;
    o->qa = q->p;
    for (int i = 0; (end = qid_end(q, i, ' ')) >= 0; i++) {
        if (!LIT_AT(s, n, end, " <= "))
            continue;
        if (kind == 3 && !contains((const char *)s, n, " A=", 3))
            return 0;
        o->qb = end;
        int r = arrival_sender(kind, s, n, end + 4, o);
        if (r != 0)
            return r;
    }
    return 0;
}

/* An arrival shape's match at s[pos:]: arrival_from after the prefix (always Exim's). */
static int
arrival_match(int kind, const unsigned char *s, Py_ssize_t n, Py_ssize_t pos, Found *o)
{
    QidAt q;
    qid_readings(s, n, exim_prefix_end(s, n, pos), &q);
    return arrival_from(kind, s, n, &q, o);
}

/* qid.decode("ascii") if qid else NULL (no error set); NULL with an error set on failure. */
static PyObject *
decoded_qid(PyObject *raw)
{
    if (!PyBytes_Check(raw) || PyBytes_GET_SIZE(raw) == 0)
        return NULL;
    return PyUnicode_DecodeASCII(PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), NULL);
}

/* filters._ip on a rule's `ip` group: the cached conversion, else the Python one (which fills
 * the cache). New reference: the address, Py_None when the text is no address, NULL on error. */
static PyObject *
address_from(Ctx *x, Found *m, PyObject *g_ip)
{
    PyObject *raw = match_group(m, g_ip);
    if (raw == NULL)
        return NULL;
    PyObject *ip = raw == Py_None ? NULL : PyDict_GetItemWithError(x->ip_cache, raw);
    if (ip != NULL)
        Py_INCREF(ip);
    else if (!PyErr_Occurred())
        ip = PyObject_CallOneArg(x->ip_fn, raw);
    Py_DECREF(raw);
    return ip;
}

/* TallySet's spec of a rule, (key, ip group name | None, qid group name | None, (key, None,
 * None)), applied to a match: the tally (key, ip, qid) as filters._tally_builder's closure
 * builds it, Py_None for "no event", NULL on error. New reference. */
static PyObject *
tally_from(Ctx *x, PyObject *spec, Found *m)
{
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != 4) {
        PyErr_SetString(PyExc_TypeError, "a tally spec must be a 4-tuple");
        return NULL;
    }
    PyObject *key = PyTuple_GET_ITEM(spec, 0), *g_ip = PyTuple_GET_ITEM(spec, 1);
    PyObject *g_qid = PyTuple_GET_ITEM(spec, 2), *plain = PyTuple_GET_ITEM(spec, 3);
    PyObject *ip = Py_NewRef(Py_None), *qid = NULL;
    if (g_ip != Py_None) {
        Py_SETREF(ip, address_from(x, m, g_ip));
        if (ip == NULL || ip == Py_None)
            return ip;  /* None: the rule promised an address and the line holds none: no event */
    }
    if (g_qid != Py_None) {
        PyObject *raw = match_group(m, g_qid);
        qid = raw == NULL ? NULL : decoded_qid(raw);
        Py_XDECREF(raw);
        if (PyErr_Occurred()) {
            Py_DECREF(ip);
            return NULL;
        }
    }
    /* (key, None, None) is always the rule's one `plain` tuple, as in _tally_builder */
    PyObject *t = ip == Py_None && qid == NULL ? Py_NewRef(plain)
                                               : PyTuple_Pack(3, key, ip, qid != NULL ? qid : Py_None);
    Py_DECREF(ip);
    Py_XDECREF(qid);
    return t;
}

/* Whether the literal occurs in s[:n]. glibc's memmem costs more than the regex it saves on
 * lines of ~150 bytes (perf); memchr for the first byte, then memcmp, is several times cheaper. */
static int
contains(const char *s, Py_ssize_t n, const char *lit, Py_ssize_t llen)
{
    if (llen > n)
        return 0;
    const char *p = s, *last = s + (n - llen);
    while (p <= last) {
        p = memchr(p, lit[0], (size_t)(last - p) + 1);
        if (p == NULL)
            return 0;
        if (p[llen - 1] == lit[llen - 1] && memcmp(p + 1, lit + 1, (size_t)llen - 1) == 0)
            return 1;
        p++;
    }
    return 0;
}

/* Whether a rule's literal (bytes, or a tuple of them: any of them, filters.holds) occurs in
 * s[:n]. */
static int
holds(PyObject *literal, const char *s, Py_ssize_t n)
{
    if (PyBytes_Check(literal))
        return contains(s, n, PyBytes_AS_STRING(literal), PyBytes_GET_SIZE(literal));
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(literal); k++) {
        PyObject *text = PyTuple_GET_ITEM(literal, k);
        if (PyBytes_GET_SIZE(text) > 0 && contains(s, n, PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text)))
            return 1;
    }
    return 0;
}

/* Whether the literal text starts at u[at] (and fits in n bytes). */
static inline int
text_at(PyObject *text, const unsigned char *u, Py_ssize_t at, Py_ssize_t n)
{
    Py_ssize_t len = PyBytes_GET_SIZE(text);
    return at + len <= n && memcmp(u + at, PyBytes_AS_STRING(text), (size_t)len) == 0;
}

/* Which of the first 64 rules' literals occur in s[:n], as bits: one Wu-Manber pass (see
 * mailban/core/literals.py) instead of a memchr pass per literal. The literal texts are the
 * rules' own (rules[r][0]: bytes, or a tuple of them, any of which counts); the index only says
 * where to look. */
static uint64_t
literals_in(const char *index, PyObject *rules, const char *s, Py_ssize_t n)
{
    uint64_t head[2];
    memcpy(head, index, sizeof head);
    const unsigned char *shift = (const unsigned char *)index + 8 * (2 + INDEX_CANDS);
    const uint64_t m = head[0], all = head[1];
    uint64_t found = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (Py_ssize_t pos = (Py_ssize_t)m - 1; pos < n;) {
        unsigned a = u[pos - 1], b = u[pos];
        unsigned step = shift[((a << 4) ^ b) & (INDEX_SHIFTS - 1)];
        if (step != 0) {
            pos += step;
            continue;
        }
        Py_ssize_t at = pos - (Py_ssize_t)m + 1;
        uint64_t c;
        memcpy(&c, index + 8 * (2 + ((a * 31 + b) & (INDEX_CANDS - 1))), sizeof c);  /* one load */
        for (c &= ~found; c != 0; c &= c - 1) {
            int r = __builtin_ctzll(c);
            PyObject *literal = PyTuple_GET_ITEM(PyTuple_GET_ITEM(rules, r), 0);
            int here = 0;
            if (PyBytes_Check(literal))
                here = text_at(literal, u, at, n);
            else
                for (Py_ssize_t k = 0; !here && k < PyTuple_GET_SIZE(literal); k++)
                    here = text_at(PyTuple_GET_ITEM(literal, k), u, at, n);
            if (here)
                found |= (uint64_t)1 << r;
        }
        if (found == all)
            break;
        pos++;
    }
    return found;
}

/* A field of an Event from its group: NULL with no error when the group did not take part or
 * is empty (the builder's `if raw:`), NULL with an error on failure. */
static PyObject *
event_field(Found *m, PyObject *name, PyObject **raw)
{
    *raw = NULL;
    if (name == Py_None)
        return NULL;
    PyObject *r = match_group(m, name);
    if (r == NULL)
        return NULL;
    if (r == Py_None || !PyBytes_Check(r) || PyBytes_GET_SIZE(r) == 0) {
        Py_DECREF(r);
        return NULL;
    }
    *raw = r;
    return r;
}

/* filters._builder's closure in C, from filters.event_spec: the Event a rule's match makes, or
 * Py_None when the rule promised an address and the line holds none. New reference. */
static PyObject *
event_from(Ctx *x, PyObject *spec, Found *m, PyObject *when, PyObject *line, PyObject *source,
           PyObject *lineno)
{
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != 14 || !PyType_Check(PyTuple_GET_ITEM(spec, 0))) {
        PyErr_SetString(PyExc_TypeError, "not an event spec (filters.event_spec)");
        return NULL;
    }
    PyObject *type = PyTuple_GET_ITEM(spec, 0);
    PyObject *f[MAX_event_fields] = {NULL};  /* the Event's fields, owned */
    PyObject *raw;
    PyObject *result = NULL;
    PyObject *g_ip = PyTuple_GET_ITEM(spec, 5), *g_user = PyTuple_GET_ITEM(spec, 6);
    PyObject *no_user = PyTuple_GET_ITEM(spec, 12);
    if (g_ip != Py_None) {
        PyObject *ip = address_from(x, m, g_ip);
        if (ip == NULL || ip == Py_None)
            return ip;  /* as tally_from */
        f[ev[EV_IP]] = ip;
    }
    if (g_user != Py_None) {
        PyObject *r = match_group(m, g_user);
        if (r == NULL)
            goto done;
        int skip = r == Py_None || !PyBytes_Check(r);
        if (!skip) {
            int in = PySet_Contains(no_user, r);
            if (in < 0) {
                Py_DECREF(r);
                goto done;
            }
            skip = in;
        }
        if (!skip && (f[ev[EV_USER]] = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(r), PyBytes_GET_SIZE(r), "replace")) == NULL) {
            Py_DECREF(r);
            goto done;
        }
        Py_DECREF(r);
    }
    /* The fields a non-empty group gives (the builder's `if raw:`), each converted as there. */
    static const struct { int spec, field; char as; } converted[] = {
        {7, EV_SENDER, 'u'},      /* sender, decoded with replacement: the null sender <> is nobody */
        {8, EV_UID, 'i'},         /* uid, int(raw) */
        {9, EV_QUEUE_ID, 'a'},    /* queue id, ASCII */
        {10, EV_RECIPIENTS, 'i'}, /* recipients */
        {11, EV_STATUS, 'a'},     /* status */
    };
    for (size_t c = 0; c < sizeof converted / sizeof converted[0]; c++) {
        if (event_field(m, PyTuple_GET_ITEM(spec, converted[c].spec), &raw) == NULL) {
            if (PyErr_Occurred())
                goto done;
            continue;
        }
        const char *text = PyBytes_AS_STRING(raw);
        Py_ssize_t size = PyBytes_GET_SIZE(raw);
        PyObject *value = converted[c].as == 'i' ? PyNumber_Long(raw)
                        : converted[c].as == 'a' ? PyUnicode_DecodeASCII(text, size, NULL)
                        : PyUnicode_DecodeUTF8(text, size, "replace");
        Py_DECREF(raw);
        if (value == NULL)
            goto done;
        f[ev[converted[c].field]] = value;
    }
    f[ev[EV_LINE]] = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line), "replace");
    if (f[ev[EV_LINE]] == NULL)
        goto done;
    f[ev[EV_TIME]] = Py_NewRef(when);
    f[ev[EV_KIND]] = Py_NewRef(PyTuple_GET_ITEM(spec, 1));
    f[ev[EV_FILTER]] = Py_NewRef(PyTuple_GET_ITEM(spec, 2));
    f[ev[EV_RULE]] = Py_NewRef(PyTuple_GET_ITEM(spec, 3));
    if (f[ev[EV_STATUS]] == NULL)
        f[ev[EV_STATUS]] = Py_NewRef(PyTuple_GET_ITEM(spec, 4));  /* the rule's fixed status, or None */
    f[ev[EV_SOURCE]] = Py_NewRef(source);
    f[ev[EV_LINENO]] = Py_NewRef(lineno);
    /* count (<COUNT>): int(raw), at least 1, as the builder; 1 when the rule has none */
    if (event_field(m, PyTuple_GET_ITEM(spec, 13), &raw) != NULL) {
        PyObject *value = PyNumber_Long(raw);
        Py_DECREF(raw);
        if (value == NULL)
            goto done;
        int below = PyObject_RichCompareBool(value, int_one, Py_LT);
        if (below < 0) {
            Py_DECREF(value);
            goto done;
        }
        if (below)
            Py_SETREF(value, Py_NewRef(int_one));
        f[ev[EV_COUNT]] = value;
    }
    else if (PyErr_Occurred())
        goto done;
    else
        f[ev[EV_COUNT]] = Py_NewRef(int_one);
    result = ((PyTypeObject *)type)->tp_alloc((PyTypeObject *)type, event_fields);
    if (result == NULL)
        goto done;
    for (int i = 0; i < event_fields; i++) {
        PyTuple_SET_ITEM(result, i, f[i] != NULL ? f[i] : Py_NewRef(Py_None));
        f[i] = NULL;
    }
done:
    for (int i = 0; i < event_fields; i++)
        Py_XDECREF(f[i]);
    return result;
}

/* The filter's first rule whose literal is in the line and whose regex matches there, as
 * filters._one_by_one (the same rule the combined regex of FilterSet.match picks; checking the
 * literals first, in C, costs less than that regex: most lines hold the literal of one rule of
 * a filter, or of none). What it yields: what the rule's spec says, the tally (TallySet) or the
 * Event (FilterSet), as their Python builders would; Py_None for nothing. */
static PyObject *
first_rule(Ctx *x, PyObject *group, PyObject *line, const char *s, Py_ssize_t n, PyObject *start,
           PyObject *when, PyObject *source, PyObject *lineno)
{
    PyObject *rules = PyTuple_GET_ITEM(group, 3), *specs = PyTuple_GET_ITEM(group, 4);
    PyObject *index = PyTuple_GET_ITEM(group, 5);
    Py_ssize_t count = PyTuple_GET_SIZE(rules);
    /* shapes.SHAPED_GROUP: every rule has a shape whose match holds its literal, no scan needed */
    int shaped = shaped_group(index);
    uint64_t found = index == Py_None || shaped ? 0 : literals_in(PyBytes_AS_STRING(index), rules, s, n);
    /* With a literal index over all the rules, the rules to try are those whose literal is in the
     * line and those without one (the index's mask says which have one): go from one to the next. */
    int by_bits = index != Py_None && !shaped && count <= INDEX_WIDTH;
    uint64_t tries = 0;
    if (by_bits) {
        uint64_t with_literal;
        memcpy(&with_literal, PyBytes_AS_STRING(index) + 8, sizeof with_literal);
        tries = found | (~with_literal & (count == INDEX_WIDTH ? ~(uint64_t)0 : ((uint64_t)1 << count) - 1));
    }
    /* the queue id's readings after each prefix kind (shapes.py), read once for all the shapes */
    QidAt qids[2];
    int read[2] = {0, 0};
    Py_ssize_t at = -2;
    const unsigned char *u = (const unsigned char *)s;
    for (Py_ssize_t r = 0; r < count; r++) {
        if (by_bits) {
            uint64_t rest = r < INDEX_WIDTH ? tries >> r : 0;
            if (rest == 0)
                break;
            r += __builtin_ctzll(rest);
        }
        PyObject *rule = PyTuple_GET_ITEM(rules, r);  /* (literal, match, Python builder, shape) */
        PyObject *literal = PyTuple_GET_ITEM(rule, 0);
        Py_ssize_t llen = PyBytes_Check(literal) ? PyBytes_GET_SIZE(literal) : PyTuple_GET_SIZE(literal);
        if (!shaped && !by_bits && llen > 0 &&
            (index != Py_None && r < INDEX_WIDTH ? !((found >> r) & 1) : !holds(literal, s, n)))
            continue;
        PyObject *shape = PyTuple_GET_SIZE(rule) >= 4 ? PyTuple_GET_ITEM(rule, 3) : Py_None;
        Found m = {NULL, s, 0, 0, -1, -1, -1, -1, -1, -1};
        if (shape != Py_None || shaped) {
            if (at == -2 && (at = PyLong_AsSsize_t(start)) == -1 && PyErr_Occurred())
                return NULL;
            if (!valid_shape(shape))
                return NULL;
            const unsigned char *h = (const unsigned char *)PyBytes_AS_STRING(shape);
            int got = 0;
            if (at >= 0 && at <= n) {
                int kind = h[0];
                if (!read[kind]) {
                    qid_readings(u, n, kind == 1 ? exim_prefix_end(u, n, at) : at, &qids[kind]);
                    read[kind] = 1;
                }
                got = h[1] >= 3 ? arrival_from(h[1], u, n, &qids[kind], &m)
                                : shape_from(h, u, n, &qids[kind], &m.qa, &m.qb);
            }
            if (got == 0)
                continue;
            if (got == ARRIVAL_REGEX)
                shape = Py_None;  /* a form the arrival matcher leaves to the regex */
        }
        if (shape == Py_None) {
            PyObject *margs[] = {line, start};
            m.m = PyObject_Vectorcall(PyTuple_GET_ITEM(rule, 1), margs, 2, NULL);
            if (m.m == NULL)
                return NULL;
            if (m.m == Py_None) {
                Py_DECREF(m.m);
                continue;
            }
        }
        PyObject *spec = PyTuple_GET_ITEM(specs, r);
        /* a quiet rule's spec is its metrics key (kind, filter), which stands for the event
         * nothing needs (needs.py): no group is read, nothing is built */
        PyObject *result = PyTuple_GET_SIZE(spec) == 4 ? tally_from(x, spec, &m)
                         : PyTuple_GET_SIZE(spec) == 2 ? Py_NewRef(spec)
                         : event_from(x, spec, &m, when, line, source, lineno);
        Py_XDECREF(m.m);
        return result;
    }
    return Py_NewRef(Py_None);
}

/* The stems (at most 64 non-empty bytes; else `usable` is 0) by their first byte: one pass over a
 * line then compares only the stems that start with the byte it is at. */
typedef struct {
    int usable;
    uint64_t by_first[256];
} StemIndex;

static void
stem_index(PyObject *stems, StemIndex *ix)
{
    memset(ix, 0, sizeof *ix);
    if (PyTuple_GET_SIZE(stems) > 64)
        return;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(stems); k++) {
        PyObject *stem = PyTuple_GET_ITEM(stems, k);
        if (!PyBytes_Check(stem) || PyBytes_GET_SIZE(stem) == 0)
            return;
        ix->by_first[(unsigned char)PyBytes_AS_STRING(stem)[0]] |= (uint64_t)1 << k;
    }
    ix->usable = 1;
}

/* scan.looks_like_failure on s[0:n]: one of `stems` (scan.FAILURE_STEMS, lower-case bytes) in
 * the text's first 1,024 bytes, ignoring ASCII case. With an index (ix->usable), one pass; else
 * a search per stem. */
static int
looks_like_failure(PyObject *stems, const StemIndex *ix, const char *s, Py_ssize_t n)
{
    char low[1024];
    if (n > (Py_ssize_t)sizeof low)
        n = sizeof low;  /* the words come early: a program's own text precedes long client text */
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = s[i];
        low[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    if (ix != NULL && ix->usable) {
        for (Py_ssize_t i = 0; i < n; i++) {
            for (uint64_t c = ix->by_first[(unsigned char)low[i]]; c != 0; c &= c - 1) {
                PyObject *stem = PyTuple_GET_ITEM(stems, __builtin_ctzll(c));
                Py_ssize_t len = PyBytes_GET_SIZE(stem);
                if (i + len <= n && memcmp(low + i, PyBytes_AS_STRING(stem), (size_t)len) == 0)
                    return 1;
            }
        }
        return 0;
    }
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(stems); k++) {
        PyObject *stem = PyTuple_GET_ITEM(stems, k);
        if (PyBytes_Check(stem) && PyBytes_GET_SIZE(stem) > 0 &&
            contains(low, n, PyBytes_AS_STRING(stem), PyBytes_GET_SIZE(stem)))
            return 1;
    }
    return 0;
}

static int
count_one(PyObject *dict, PyObject *key, Py_ssize_t by)
{
    PyObject *old = PyDict_GetItemWithError(dict, key);
    Py_ssize_t value = by;
    if (old == NULL) {
        if (PyErr_Occurred())
            return -1;
    } else {
        value += PyLong_AsSsize_t(old);
    }
    PyObject *v = PyLong_FromSsize_t(value);
    if (v == NULL)
        return -1;
    int rc = PyDict_SetItem(dict, key, v);
    Py_DECREF(v);
    return rc;
}

/* The walk over lines that tally() and match_lines() share: each line with a header comes out
 * with its header, the filter groups covering its program and its message start. */
typedef struct {
    Ctx x;
    Memo memo;
    PyObject *it;
    Py_ssize_t lineno, parsed;
    /* the current line (owned, released by scan_next and scan_close) */
    PyObject *line, *groups, *start;
    const char *s;
    Py_ssize_t n;
    Line h;
    /* an rsyslog fold (syslog.unfold): `line` is the line it stands for, `shown` the line as
     * logged (owned), `times` the copies; shown NULL otherwise */
    PyObject *shown;
    Py_ssize_t times;
    /* the last line with a program's header (SyslogParser.previous: what a `last message
     * repeated N times` line stands for), owned, or NULL */
    PyObject *previous;
    /* the current line is such a repeat, expanded by scan_repeat */
    int repeat;
} Scan;

/* ctx: FilterSet.scan_context(parser), with the Header type after it for match_lines(). */
static int
scan_open(Scan *sc, PyObject *lines, PyObject *ctx_t, Py_ssize_t lineno, int with_header_type)
{
    memset(sc, 0, sizeof *sc);
    sc->lineno = lineno;
    Ctx *x = &sc->x;
    int ok = with_header_type
        ? PyArg_ParseTuple(ctx_t, "OO!OO!OOOO", &x->parser, &PyDict_Type, &x->dispatch, &x->rules_for,
                           &PyDict_Type, &x->ip_cache, &x->ip_fn, &x->unfold, &x->refold, &x->header_type)
        : PyArg_ParseTuple(ctx_t, "OO!OO!OOO", &x->parser, &PyDict_Type, &x->dispatch, &x->rules_for,
                           &PyDict_Type, &x->ip_cache, &x->ip_fn, &x->unfold, &x->refold);
    if (!ok)
        return -1;
    if (with_header_type && !PyType_Check(x->header_type)) {
        PyErr_SetString(PyExc_TypeError, "the context needs the Header type");
        return -1;
    }
    if (ctx_parser(x) < 0)
        return -1;
    PyObject *previous = PyObject_GetAttrString(x->parser, "previous");
    if (previous == NULL || (sc->it = PyObject_GetIter(lines)) == NULL) {
        Py_XDECREF(previous);
        ctx_clear(x);
        return -1;
    }
    if (PyBytes_Check(previous))
        sc->previous = previous;
    else
        Py_DECREF(previous);
    return 0;
}

/* The parser's `previous` and `last` as the loop leaves them. 0, or -1 with an error set. */
static int
scan_sync(Scan *sc)
{
    if (PyObject_SetAttrString(sc->x.parser, "previous", sc->previous != NULL ? sc->previous : Py_None) < 0)
        return -1;
    return memo_sync(&sc->x, &sc->memo);
}

/* `last message repeated N times` (see syslog.REPEATS): the previous line with this one's stamp becomes the current line, and this one
 * is `shown`, with `times` copies, as for rsyslog's fold (SyslogParser.expand decides; rare, so
 * the Python method is called). 0, or -1 with an error set. */
static int
scan_repeat(Scan *sc)
{
    if (sc->previous == NULL)
        return 0;
    if (scan_sync(sc) < 0)
        return -1;
    PyObject *header = sc->h.header != NULL ? Py_NewRef(sc->h.header)
                     : sc->x.header_type != NULL ? header_of(sc->x.header_type, &sc->h, sc->s)
                     : PyObject_CallOneArg(sc->x.parse, sc->line);
    PyObject *got = header == NULL ? NULL : PyObject_CallMethod(sc->x.parser, "expand", "OO", sc->line, header);
    Py_XDECREF(header);
    if (got == NULL || got == Py_None) {
        Py_XDECREF(got);
        return got == NULL ? -1 : 0;
    }
    PyObject *inner, *inner_header;
    Py_ssize_t times;
    if (!PyArg_ParseTuple(got, "O!On", &PyBytes_Type, &inner, &inner_header, &times)) {
        Py_DECREF(got);
        return -1;
    }
    Py_CLEAR(sc->h.header);
    sc->shown = sc->line;  /* the reference moves */
    sc->line = Py_NewRef(inner);
    Py_DECREF(got);
    sc->s = PyBytes_AS_STRING(sc->line);
    sc->n = PyBytes_GET_SIZE(sc->line);
    sc->times = times;
    sc->repeat = 1;
    int again = read_header(&sc->x, &sc->memo, sc->line, sc->s, sc->n, &sc->h);
    if (again == 0)
        PyErr_SetString(PyExc_ValueError, "SyslogParser.expand gave a line without a header");
    return again == 1 ? 0 : -1;
}

static void
scan_release(Scan *sc)
{
    Py_CLEAR(sc->start);
    Py_CLEAR(sc->groups);
    Py_CLEAR(sc->h.header);
    Py_CLEAR(sc->line);
    Py_CLEAR(sc->shown);
    sc->times = 1;
    sc->repeat = 0;
}

/* FilterSet.match's check for rsyslog's fold: when the current line is `message repeated N
 * times: [ msg]`, match the line it stands for instead (syslog.unfold decides; rare, so the
 * Python function is called rather than copied). 0, or -1 with an error set. */
static int
scan_unfold(Scan *sc)
{
    static const char repeated[] = "message repeated ";
    Py_ssize_t k = sizeof repeated - 1;
    if (sc->n - sc->h.msg < k || memcmp(sc->s + sc->h.msg, repeated, (size_t)k) != 0)
        return 0;
    PyObject *folded = PyObject_CallFunctionObjArgs(sc->x.unfold, sc->line, sc->start, NULL);
    if (folded == NULL)
        return -1;
    if (folded == Py_None) {
        Py_DECREF(folded);
        return 0;
    }
    PyObject *inner, *times;
    if (!PyArg_ParseTuple(folded, "O!O!", &PyBytes_Type, &inner, &PyLong_Type, &times)) {
        Py_DECREF(folded);
        return -1;
    }
    sc->times = PyLong_AsSsize_t(times);
    if (sc->times == -1 && PyErr_Occurred()) {
        Py_DECREF(folded);
        return -1;
    }
    sc->shown = sc->line;  /* the reference moves */
    sc->line = Py_NewRef(inner);
    sc->s = PyBytes_AS_STRING(inner);
    sc->n = PyBytes_GET_SIZE(inner);
    Py_DECREF(folded);
    return 0;
}

/* 1: the next line with a header is current; 0: no more lines; -1: error. */
static int
scan_next(Scan *sc)
{
    scan_release(sc);
    while ((sc->line = PyIter_Next(sc->it)) != NULL) {
        sc->lineno++;
        if (!PyBytes_Check(sc->line)) {
            PyErr_SetString(PyExc_TypeError, "lines must be bytes");
            return -1;
        }
        sc->s = PyBytes_AS_STRING(sc->line);
        sc->n = PyBytes_GET_SIZE(sc->line);
        int got = read_header(&sc->x, &sc->memo, sc->line, sc->s, sc->n, &sc->h);
        if (got < 0)
            return -1;
        if (got == 0) {
            Py_CLEAR(sc->line);
            continue;
        }
        sc->parsed++;
        static const char last_repeated[] = "last message repeated ";  /* syslog.LAST_REPEATED */
        const Py_ssize_t k = sizeof last_repeated - 1;
        if ((PyBytes_Check(sc->h.tag) && PyBytes_GET_SIZE(sc->h.tag) == 0) ||  /* syslog.REPEATS */
            (sc->n - sc->h.msg >= k && sc->s[sc->h.msg] == 'l' && memcmp(sc->s + sc->h.msg, last_repeated, (size_t)k) == 0)) {
            if (scan_repeat(sc) < 0)
                return -1;
        } else {
            Py_XSETREF(sc->previous, Py_NewRef(sc->line));
        }
        if ((sc->groups = groups_for(&sc->x, sc->h.tag)) == NULL)
            return -1;
        if (PyTuple_GET_SIZE(sc->groups) > 0 &&
            ((sc->start = PyLong_FromSsize_t(sc->h.msg)) == NULL || scan_unfold(sc) < 0))
            return -1;
        return 1;
    }
    /* the end of the lines: the parser's `last` is the time of the last of them that had one,
     * its `previous` the last line of a program */
    return PyErr_Occurred() || scan_sync(sc) < 0 ? -1 : 0;
}

static void
scan_close(Scan *sc)
{
    scan_release(sc);
    Py_CLEAR(sc->previous);
    Py_CLEAR(sc->it);
    memo_clear(&sc->memo);
    ctx_clear(&sc->x);
}

/* Count a kept event: per rule, and per address with the position of its first count. A
 * position is (file, line, event on the line); with fileno < 0, a range's own (line, event),
 * which only grow while a range is walked, so the first count's position is never replaced. */
static int
count_event(PyObject *per_rule, PyObject *per_ip, PyObject *first, PyObject *key, PyObject *ip,
            Py_ssize_t fileno, Py_ssize_t lineno, Py_ssize_t j)
{
    if (count_one(per_rule, key, 1) < 0)
        return -1;
    if (ip == Py_None || !PyObject_IsTrue(ip))
        return 0;
    PyObject *old = PyDict_GetItemWithError(per_ip, ip);
    if (old == NULL) {
        if (PyErr_Occurred())
            return -1;
        PyObject *pos = fileno < 0 ? Py_BuildValue("(nn)", lineno, j) : Py_BuildValue("(nnn)", fileno, lineno, j);
        int rc = pos == NULL ? -1 : PyDict_SetItem(first, ip, pos);
        Py_XDECREF(pos);
        return rc < 0 ? -1 : PyDict_SetItem(per_ip, ip, int_one);
    }
    if (count_one(per_ip, ip, 1) < 0)
        return -1;
    if (fileno < 0)
        return 0;
    PyObject *at = PyDict_GetItemWithError(first, ip);
    if (at == NULL || !PyTuple_Check(at) || PyTuple_GET_SIZE(at) != 3)
        return PyErr_Occurred() ? -1 : 0;
    Py_ssize_t f0 = PyLong_AsSsize_t(PyTuple_GET_ITEM(at, 0));
    Py_ssize_t f1 = PyLong_AsSsize_t(PyTuple_GET_ITEM(at, 1));
    Py_ssize_t f2 = PyLong_AsSsize_t(PyTuple_GET_ITEM(at, 2));
    if (PyErr_Occurred())
        return -1;
    if (fileno < f0 || (fileno == f0 && (lineno < f1 || (lineno == f1 && j < f2)))) {
        PyObject *pos = Py_BuildValue("(nnn)", fileno, lineno, j);
        int rc = pos == NULL ? -1 : PyDict_SetItem(first, ip, pos);
        Py_XDECREF(pos);
        return rc;
    }
    return 0;
}

/* What the one walk over lines (scan_walk) does with what it finds. The walk cuts each line's
 * header, selects the filters covering its program and, in each, the first rule whose literal
 * and regex match; the rule's spec builds the result (an Event or a summary tally, see
 * first_rule). The sink takes the results: `begin` before a line's rules, `take` for each
 * result (the j-th of its line), `end` after them with their number, `release` after each line
 * whatever happened. Two sinks, as in Python FilterSet.match_logged serves both FilterSet and
 * TallySet: match_lines() keeps Events, tally() counts tallies. Each returns 0, or -1 with an
 * error set. */
typedef struct LineSink LineSink;
struct LineSink {
    PyObject *source;  /* Event.source; Py_None for tallies */
    int numbered;      /* the builder needs the line's number as an int (Event.lineno) */
    PyObject *number;  /* that int for the current line (owned by the walk), else NULL */
    int (*begin)(Scan *sc, LineSink *k);
    int (*take)(Scan *sc, LineSink *k, PyObject *result, Py_ssize_t j);
    int (*end)(Scan *sc, LineSink *k, Py_ssize_t results);
    void (*release)(LineSink *k);
};

/* The loop over lines: 0 at the end of the lines, -1 with an error set. */
static int
scan_walk(Scan *sc, LineSink *k)
{
    int more;
    while ((more = scan_next(sc)) > 0) {
        int rc = 0;
        if (k->numbered && (k->number = PyLong_FromSsize_t(sc->lineno)) == NULL)
            rc = -1;
        if (rc == 0)
            rc = k->begin(sc, k);
        Py_ssize_t j = 0;
        for (Py_ssize_t g = 0; rc == 0 && g < PyTuple_GET_SIZE(sc->groups); g++) {
            PyObject *result = first_rule(&sc->x, PyTuple_GET_ITEM(sc->groups, g), sc->line, sc->s, sc->n,
                                          sc->start, sc->h.when, k->source,
                                          k->number != NULL ? k->number : Py_None);
            if (result == NULL)
                rc = -1;
            else if (result != Py_None)
                rc = k->take(sc, k, result, j++);
            Py_XDECREF(result);
        }
        if (rc == 0)
            rc = k->end(sc, k, j);
        k->release(k);
        Py_CLEAR(k->number);
        if (rc < 0)
            return -1;
    }
    return more;
}

/* --- tally: the summary's sink ---------------------------------------------------------------- */

typedef struct {
    LineSink base;
    PyObject *per_rule, *per_ip, *first, *pending, *same, *stems;  /* borrowed */
    StemIndex stem_index;
    Py_ssize_t matched, missed;
    int failing;
} TallySink;

static int
tally_begin(Scan *sc, LineSink *k)
{
    return 0;
}

/* A tally (key, ip, qid): one with a queue id is left to the caller's correlation (with one
 * object per host and queue id), the others are counted per rule and per address. */
static int
tally_take(Scan *sc, LineSink *k, PyObject *result, Py_ssize_t j)
{
    TallySink *t = (TallySink *)k;
    PyObject *key = PyTuple_GET_ITEM(result, 0), *ip = PyTuple_GET_ITEM(result, 1);
    PyObject *qid = PyTuple_GET_ITEM(result, 2);
    if (qid == Py_None)
        return count_event(t->per_rule, t->per_ip, t->first, key, ip, -1, sc->lineno, j);
    PyObject *hs = PyDict_SetDefault(t->same, sc->h.host, sc->h.host);
    PyObject *q = hs == NULL ? NULL : PyDict_SetDefault(t->same, qid, qid);
    /* (time, key, ip, host, qid, lineno, j), built directly: Py_BuildValue's format parsing
     * cost as much as the rest of this function on every queue line */
    PyObject *p = q == NULL ? NULL : PyTuple_New(7);
    if (p == NULL)
        return -1;
    PyObject *no = PyLong_FromSsize_t(sc->lineno), *jo = PyLong_FromSsize_t(j);
    if (no == NULL || jo == NULL) {
        Py_XDECREF(no);
        Py_XDECREF(jo);
        Py_DECREF(p);
        return -1;
    }
    PyTuple_SET_ITEM(p, 0, Py_NewRef(sc->h.when));
    PyTuple_SET_ITEM(p, 1, Py_NewRef(key));
    PyTuple_SET_ITEM(p, 2, Py_NewRef(ip));
    PyTuple_SET_ITEM(p, 3, Py_NewRef(hs));
    PyTuple_SET_ITEM(p, 4, Py_NewRef(q));
    PyTuple_SET_ITEM(p, 5, no);
    PyTuple_SET_ITEM(p, 6, jo);
    int rc = PyList_Append(t->pending, p);
    Py_DECREF(p);
    return rc;
}

static int
tally_end(Scan *sc, LineSink *k, Py_ssize_t results)
{
    TallySink *t = (TallySink *)k;
    if (results > 0) {
        t->matched++;
        return 0;
    }
    /* a line of a covered program that no rule matched; whether one reads like a failure is
     * looked for until one does (the summary's hint needs no more, and the words cost more
     * than the rest of an unmatched line); a repeat is no line of its own */
    if (PyTuple_GET_SIZE(sc->groups) > 0 && !sc->repeat) {
        t->missed++;
        if (!t->failing) {
            PyObject *as_logged = sc->shown != NULL ? sc->shown : sc->line;
            t->failing = looks_like_failure(t->stems, &t->stem_index, PyBytes_AS_STRING(as_logged) + sc->h.msg,
                                            PyBytes_GET_SIZE(as_logged) - sc->h.msg);
        }
    }
    return 0;
}

static void
tally_release(LineSink *k)
{
}

static PyObject *
tally(PyObject *module, PyObject *args)
{
    PyObject *lines, *ctx_t;
    Py_ssize_t lineno;
    TallySink t = {{Py_None, 0, NULL, tally_begin, tally_take, tally_end, tally_release}};
    if (!PyArg_ParseTuple(args, "OnO!O!O!O!O!O!O!", &lines, &lineno, &PyTuple_Type, &ctx_t,
                          &PyDict_Type, &t.per_rule, &PyDict_Type, &t.per_ip, &PyDict_Type, &t.first,
                          &PyList_Type, &t.pending, &PyDict_Type, &t.same, &PyTuple_Type, &t.stems))
        return NULL;
    stem_index(t.stems, &t.stem_index);
    Scan sc;
    if (scan_open(&sc, lines, ctx_t, lineno, 0) < 0)
        return NULL;
    PyObject *res = scan_walk(&sc, &t.base) < 0 ? NULL
        : Py_BuildValue("(nnnni)", sc.lineno, sc.parsed, t.matched, t.missed, t.failing);
    scan_close(&sc);
    return res;
}

/* --- match_lines: the Events' sink ------------------------------------------------------------ */

typedef struct {
    LineSink base;
    PyObject *items;   /* borrowed */
    int all_lines;
    PyObject *events;  /* the current line's (owned) */
    PyObject *last;    /* the time of the last line with a header (owned) */
    PyObject *quiet_counts;  /* (kind, filter) -> quiet matches, or NULL (borrowed) */
    Py_ssize_t quiet;  /* the current line's quiet matches */
} EventSink;

static int
events_begin(Scan *sc, LineSink *k)
{
    EventSink *e = (EventSink *)k;
    Py_SETREF(e->last, Py_NewRef(sc->h.when));
    e->quiet = 0;
    return (e->events = PyList_New(0)) == NULL ? -1 : 0;
}

/* An Event (a tuple subclass), or a quiet rule's (kind, filter) (a plain tuple): counted, not
 * kept (FilterSet.without_quiet). */
static int
events_take(Scan *sc, LineSink *k, PyObject *result, Py_ssize_t j)
{
    EventSink *e = (EventSink *)k;
    if (PyTuple_CheckExact(result)) {
        e->quiet++;
        return e->quiet_counts == NULL ? 0 : count_one(e->quiet_counts, result, 1);
    }
    return PyList_Append(e->events, result);
}

/* The (time, line number, line, Header, events) item of the current line; for a fold, the
 * events refolded(events, times, line as logged): the counts and the line a fold stands for. */
static int
events_end(Scan *sc, LineSink *k, Py_ssize_t results)
{
    EventSink *e = (EventSink *)k;
    if (results > 0 && sc->shown != NULL) {
        PyObject *times = PyLong_FromSsize_t(sc->times);
        PyObject *fixed = times == NULL ? NULL
            : PyObject_CallFunctionObjArgs(sc->x.refold, e->events, times, sc->shown, NULL);
        Py_XDECREF(times);
        if (fixed == NULL)
            return -1;
        Py_SETREF(e->events, fixed);
    }
    if (PyList_GET_SIZE(e->events) == 0 && e->quiet > 0) {
        /* only quiet matches: (time, line number, line, None, None), which lets time pass
         * (Pipeline.quiet) */
        PyObject *item = PyTuple_Pack(5, sc->h.when, k->number, sc->shown != NULL ? sc->shown : sc->line,
                                      Py_None, Py_None);
        int rc = item == NULL ? -1 : PyList_Append(e->items, item);
        Py_XDECREF(item);
        return rc;
    }
    if (PyList_GET_SIZE(e->events) == 0 && !e->all_lines)
        return 0;
    PyObject *header = header_of(sc->x.header_type, &sc->h, sc->s);
    if (header == NULL)
        return -1;
    PyObject *item = PyTuple_Pack(5, sc->h.when, k->number, sc->shown != NULL ? sc->shown : sc->line,
                                  header, e->events);
    Py_DECREF(header);
    int rc = item == NULL ? -1 : PyList_Append(e->items, item);
    Py_XDECREF(item);
    return rc;
}

static void
events_release(LineSink *k)
{
    Py_CLEAR(((EventSink *)k)->events);
}

/* FilterSet.match over lines, for replay and Pipeline.run: appends to `items` the lines with
 * an event (or, with all_lines, every line with a header) as (time, line number, line, Header,
 * events), and the lines whose matches are all quiet rules' as (time, line number, line, None,
 * None), counting those matches per (kind, filter) in `quiet` when given (a dict, or None).
 * Returns (last line number, lines with a header, time of the last of them or None). */
static PyObject *
match_lines(PyObject *module, PyObject *args)
{
    PyObject *lines, *ctx_t, *quiet = Py_None;
    Py_ssize_t lineno;
    EventSink e = {{NULL, 1, NULL, events_begin, events_take, events_end, events_release}};
    if (!PyArg_ParseTuple(args, "OnO!UpO!|O", &lines, &lineno, &PyTuple_Type, &ctx_t, &e.base.source,
                          &e.all_lines, &PyList_Type, &e.items, &quiet) || configured() < 0)
        return NULL;
    if (quiet != Py_None && !PyDict_Check(quiet)) {
        PyErr_SetString(PyExc_TypeError, "quiet must be a dict or None");
        return NULL;
    }
    e.quiet_counts = quiet == Py_None ? NULL : quiet;
    Scan sc;
    if (scan_open(&sc, lines, ctx_t, lineno, 1) < 0)
        return NULL;
    e.last = Py_NewRef(Py_None);
    PyObject *res = scan_walk(&sc, &e.base) < 0 ? NULL : Py_BuildValue("(nnO)", sc.lineno, sc.parsed, e.last);
    Py_DECREF(e.last);
    scan_close(&sc);
    return res;
}

/* --- correlation: one step, two front ends --------------------------------------------------- */

/* The two kinds of record the step keeps: merge()'s [time, address, queued] lists (the
 * summary's, which reads only the address) and correlate()'s Message objects. */
typedef struct {
    int (*queued)(PyObject *record);      /* 1, 0, or -1 with an error set */
    int (*set_queued)(PyObject *record);  /* 0, or -1 with an error set */
    double (*time)(PyObject *record);     /* -1.0 with an error set on failure */
} RecordKind;

static int
list_queued(PyObject *record)
{
    return PyObject_IsTrue(PyList_GET_ITEM(record, 2));
}

static int
list_set_queued(PyObject *record)
{
    return PyList_SetItem(record, 2, Py_NewRef(Py_True));
}

static double
list_time(PyObject *record)
{
    return PyFloat_AsDouble(PyList_GET_ITEM(record, 0));
}

static int
message_queued(PyObject *record)
{
    PyObject *queued = PyObject_GetAttr(record, str_queued);
    int truth = queued == NULL ? -1 : PyObject_IsTrue(queued);
    Py_XDECREF(queued);
    return truth;
}

static int
message_set_queued(PyObject *record)
{
    return PyObject_SetAttr(record, str_queued, Py_True);
}

static double
message_time(PyObject *record)
{
    PyObject *t = PyObject_GetAttr(record, str_time);
    double time = t == NULL ? -1.0 : PyFloat_AsDouble(t);
    Py_XDECREF(t);
    return time;
}

static const RecordKind LIST_RECORDS = {list_queued, list_set_queued, list_time};
static const RecordKind MESSAGE_RECORDS = {message_queued, message_set_queued, message_time};

/* The records of one correlation, with what opens a new one. */
typedef struct Records Records;
struct Records {
    const RecordKind *kind;
    PyObject *messages;          /* dict (host, queue id) -> record, in insertion order (borrowed) */
    PyObject *correlator;        /* where ttl and max_messages are read when first needed, or NULL */
    double ttl;
    Py_ssize_t max_messages;     /* -1 until known */
    Py_ssize_t dropped;          /* records evicted that a queue manager never queued */
    PyObject *(*open)(Records *rs, void *arg);  /* a new record; NULL with an error set */
    void *arg;
};

/* Correlator._store: (re)insert the record last, then drop the oldest records (dict order)
 * while there are more than max_messages (counting those never queued) or the oldest is older
 * than ttl in log time. 0, or -1 with an error set. */
static int
store_record(Records *rs, PyObject *key, PyObject *record, double now)
{
    if (rs->max_messages < 0) {
        /* the correlator's limits, read per call that stores, not per line: most store nothing */
        PyObject *ttl_o = PyObject_GetAttr(rs->correlator, str_ttl);
        PyObject *max_o = ttl_o == NULL ? NULL : PyObject_GetAttr(rs->correlator, str_max_messages);
        rs->ttl = max_o == NULL ? -1.0 : PyFloat_AsDouble(ttl_o);
        rs->max_messages = max_o == NULL ? -1 : PyLong_AsSsize_t(max_o);
        Py_XDECREF(ttl_o);
        Py_XDECREF(max_o);
        if (PyErr_Occurred())
            return -1;
    }
    PyObject *messages = rs->messages;
    if (PyDict_DelItem(messages, key) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_KeyError))
            return -1;
        PyErr_Clear();
    }
    if (PyDict_SetItem(messages, key, record) < 0)
        return -1;
    double horizon = now - rs->ttl;
    while (PyDict_GET_SIZE(messages) > 0) {
        Py_ssize_t pos = 0;
        PyObject *oldest_key, *oldest;
        if (!PyDict_Next(messages, &pos, &oldest_key, &oldest))
            break;
        if (PyDict_GET_SIZE(messages) > rs->max_messages) {
            int queued = rs->kind->queued(oldest);
            if (queued < 0)
                return -1;
            rs->dropped += !queued;
        } else {
            double time = rs->kind->time(oldest);
            if (time == -1.0 && PyErr_Occurred())
                return -1;
            if (time >= horizon)
                break;
        }
        Py_INCREF(oldest_key);
        int rc = PyDict_DelItem(messages, oldest_key);
        Py_DECREF(oldest_key);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* A new record, stored under key. New reference, or NULL with an error set. */
static PyObject *
open_record(Records *rs, PyObject *key, double now)
{
    PyObject *record = rs->open(rs, rs->arg);
    if (record != NULL && store_record(rs, key, record, now) < 0)
        Py_CLEAR(record);
    return record;
}

/* Correlator._record: the one step of queue-id correlation on the records, for correlate()
 * and merge(). A submission opens its message's record, a queue manager's line opens it when
 * no submission did and drops a retry of a message already counted, a removal closes it, every
 * other line reads it. Sets *record (a new reference, or NULL: no record), *kept and *opened.
 * 0, or -1 with an error set. */
static int
record_step(Records *rs, PyObject *kind, PyObject *key, double now, PyObject **record, int *kept,
            int *opened)
{
    *record = NULL;
    *kept = 1;
    *opened = 0;
    if (PyUnicode_Compare(kind, str_submission) == 0) {
        *opened = 1;
        return (*record = open_record(rs, key, now)) == NULL ? -1 : 0;
    }
    PyObject *r = PyDict_GetItemWithError(rs->messages, key);
    if (r == NULL && PyErr_Occurred())
        return -1;
    Py_XINCREF(r);
    if (r != NULL && PyUnicode_Compare(kind, str_removed) == 0 && PyDict_DelItem(rs->messages, key) < 0) {
        Py_DECREF(r);
        return -1;
    }
    if (PyUnicode_Compare(kind, str_queued) != 0) {
        *record = r;
        return 0;
    }
    if (r == NULL) {
        if ((r = open_record(rs, key, now)) == NULL)
            return -1;
        *opened = 1;
    } else {
        int queued = rs->kind->queued(r);
        if (queued != 0) {  /* 1: a retry of a message already counted; -1: an error */
            *kept = 0;
            *record = r;
            return queued < 0 ? -1 : 0;
        }
    }
    *record = r;
    return rs->kind->set_queued(r);
}

/* --- merge: the summary's front end ---------------------------------------------------------- */

typedef struct {
    PyObject *when, *ip;  /* the event's (borrowed) */
} ListOpen;

static PyObject *
open_list(Records *rs, void *arg)
{
    ListOpen *o = arg;
    return Py_BuildValue("[OOO]", o->when, o->ip, Py_False);
}

/* Correlator.address_of and the summary's counting for the events tally() left pending, in
 * file order; records [time, address, queued] in `messages`. Returns the records dropped. */
static PyObject *
merge(PyObject *module, PyObject *args)
{
    PyObject *pending, *messages, *per_rule, *per_ip, *first;
    Py_ssize_t fileno, offset, max_messages;
    double ttl;
    if (!PyArg_ParseTuple(args, "O!nnO!dnO!O!O!", &PyList_Type, &pending, &fileno, &offset,
                          &PyDict_Type, &messages, &ttl, &max_messages,
                          &PyDict_Type, &per_rule, &PyDict_Type, &per_ip, &PyDict_Type, &first))
        return NULL;
    if (max_messages < 0) {
        PyErr_SetString(PyExc_ValueError, "max_messages must not be negative");
        return NULL;
    }
    ListOpen o;
    Records rs = {&LIST_RECORDS, messages, NULL, ttl, max_messages, 0, open_list, &o};
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pending); i++) {
        PyObject *item = PyList_GET_ITEM(pending, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 7) {
            PyErr_SetString(PyExc_TypeError, "a pending event must be a 7-tuple");
            return NULL;
        }
        PyObject *key = PyTuple_GET_ITEM(item, 1);
        o.when = PyTuple_GET_ITEM(item, 0);
        o.ip = PyTuple_GET_ITEM(item, 2);
        Py_ssize_t lineno = PyLong_AsSsize_t(PyTuple_GET_ITEM(item, 5));
        Py_ssize_t j = PyLong_AsSsize_t(PyTuple_GET_ITEM(item, 6));
        double now = PyFloat_AsDouble(o.when);
        if (PyErr_Occurred())
            return NULL;
        if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) != 3) {
            PyErr_SetString(PyExc_TypeError, "a rule key must be a 3-tuple");
            return NULL;
        }
        PyObject *mkey = PyTuple_Pack(2, PyTuple_GET_ITEM(item, 3), PyTuple_GET_ITEM(item, 4));
        if (mkey == NULL)
            return NULL;
        PyObject *record;
        int kept, opened;
        int rc = record_step(&rs, PyTuple_GET_ITEM(key, 2), mkey, now, &record, &kept, &opened);
        Py_DECREF(mkey);
        if (rc == 0 && kept) {
            /* the address: the event's own, else its message's */
            PyObject *address = o.ip == Py_None && record != NULL ? PyList_GET_ITEM(record, 1) : o.ip;
            rc = count_event(per_rule, per_ip, first, key, address, fileno, offset + lineno, j);
        }
        Py_XDECREF(record);
        if (rc < 0)
            return NULL;
    }
    return PyLong_FromSsize_t(rs.dropped);
}

/* --- correlate: the pipeline's front end ----------------------------------------------------- */

/* correlator.dropped += dropped; 0, or -1 with an error set. */
static int
add_dropped(PyObject *correlator, Py_ssize_t dropped)
{
    if (dropped == 0)
        return 0;
    PyObject *old = PyObject_GetAttr(correlator, str_dropped);
    PyObject *by = old == NULL ? NULL : PyLong_FromSsize_t(dropped);
    PyObject *sum = by == NULL ? NULL : PyNumber_Add(old, by);
    int rc = sum == NULL ? -1 : PyObject_SetAttr(correlator, str_dropped, sum);
    Py_XDECREF(old);
    Py_XDECREF(by);
    Py_XDECREF(sum);
    return rc;
}

/* records.FAILURE_KINDS: 1, 0, or -1 with an error set */
static int
is_failure_kind(PyObject *kind)
{
    PyObject *kinds[] = {str_auth_failure, str_reject, str_rate_limit, str_protocol};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        int eq = PyUnicode_Compare(kind, kinds[i]);
        if (eq == -1 && PyErr_Occurred())
            return -1;
        if (eq == 0)
            return 1;
    }
    return 0;
}

/* Whether Correlator.held has failures waiting: 1, 0, or -1 with an error set */
static int
correlator_holds(PyObject *correlator)
{
    PyObject *held = PyObject_GetAttr(correlator, str_held);
    if (held == NULL)
        return -1;
    int holds = PyObject_IsTrue(held);
    Py_DECREF(held);
    return holds;
}

/* Correlator.unrecorded for an event with a queue id no record knows, called only where it can
 * do something (rare, so the Python method decides): with `no_address`, a failure to hold;
 * otherwise an event whose address releases what its session held. 1: the event was held;
 * 0: it goes on; -1: error. */
static int
unrecorded(PyObject *correlator, PyObject *event, PyObject *key, int no_address)
{
    int ask = no_address ? is_failure_kind(PyTuple_GET_ITEM(event, ev[EV_KIND])) : correlator_holds(correlator);
    if (ask <= 0)
        return ask;
    PyObject *kept = PyObject_CallMethodObjArgs(correlator, str_unrecorded, event, key, NULL);
    if (kept == NULL)
        return -1;
    int held = kept == Py_None;  /* else the event itself */
    Py_DECREF(kept);
    return held;
}

typedef struct {
    PyObject *correlator, *message_type, *header, *event;  /* borrowed */
} MessageOpen;

/* Correlator.process's opened(): a submission's record from the event; a queue manager's line
 * (sendmail: its `from=` line opens the record) takes the user its session may know. */
static PyObject *
open_message(Records *rs, void *arg)
{
    MessageOpen *o = arg;
    PyObject *event = o->event, *header = o->header, *user = PyTuple_GET_ITEM(event, ev[EV_USER]);
    PyObject *session = NULL;
    if (PyUnicode_Compare(PyTuple_GET_ITEM(event, ev[EV_KIND]), str_submission) != 0) {
        user = Py_None;
        PyObject *sessions = PyObject_GetAttr(o->correlator, str_sessions);
        PyObject *skey = sessions == NULL ? NULL : PyTuple_Pack(3, PyTuple_GET_ITEM(header, 1),
                                                                 PyTuple_GET_ITEM(header, 2), PyTuple_GET_ITEM(header, 3));
        session = skey == NULL ? NULL : PyObject_GetItem(sessions, skey);
        Py_XDECREF(skey);
        Py_XDECREF(sessions);
        if (session == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError))
                return NULL;
            PyErr_Clear();
        } else if (PyTuple_Check(session) && PyTuple_GET_SIZE(session) == 3 && PyObject_IsTrue(session)) {
            /* session[1] if session and session[2] in (None, event.ip) */
            PyObject *sip = PyTuple_GET_ITEM(session, 2);
            int same = sip == Py_None ? 1 : PyObject_RichCompareBool(sip, PyTuple_GET_ITEM(event, ev[EV_IP]), Py_EQ);
            if (same < 0) {
                Py_DECREF(session);
                return NULL;
            }
            if (same)
                user = PyTuple_GET_ITEM(session, 1);
        }
    }
    PyObject *msg = PyObject_CallFunctionObjArgs(o->message_type, PyTuple_GET_ITEM(event, ev[EV_TIME]), user,
                                                 PyTuple_GET_ITEM(event, ev[EV_UID]), PyTuple_GET_ITEM(event, ev[EV_IP]),
                                                 PyTuple_GET_ITEM(event, ev[EV_SENDER]), NULL);
    Py_XDECREF(session);
    return msg;
}

/* The event with user, uid, ip and sender it lacks filled from its message's record: a new
 * reference (the event itself when nothing changes), or NULL with an error set. */
static PyObject *
filled(PyObject *event, PyObject *msg, PyObject *event_type)
{
    PyObject *fill[4] = {NULL, NULL, NULL, NULL};
    static const int fields[4] = {EV_USER, EV_UID, EV_IP, EV_SENDER};
    PyObject *names[4] = {str_user, str_uid, str_ip, str_sender};
    PyObject *result = NULL;
    int changed = 0;
    for (int i = 0; i < 4; i++) {
        if (PyTuple_GET_ITEM(event, ev[fields[i]]) != Py_None)
            continue;
        if ((fill[i] = PyObject_GetAttr(msg, names[i])) == NULL)
            goto done;
        changed |= fill[i] != Py_None;
    }
    if (!changed) {
        result = Py_NewRef(event);
        goto done;
    }
    result = ((PyTypeObject *)event_type)->tp_alloc((PyTypeObject *)event_type, event_fields);
    if (result == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < event_fields; i++)
        PyTuple_SET_ITEM(result, i, Py_NewRef(PyTuple_GET_ITEM(event, i)));
    for (int i = 0; i < 4; i++) {
        if (fill[i] != NULL && fill[i] != Py_None)
            Py_SETREF(((PyTupleObject *)result)->ob_item[ev[fields[i]]], Py_NewRef(fill[i]));
    }
done:
    for (int i = 0; i < 4; i++)
        Py_XDECREF(fill[i]);
    return result;
}

/* Correlator.process for one event with a queue id: a new reference to the event to keep
 * (filled from its record), Py_None when it is dropped or held, NULL with an error set. */
static PyObject *
process_queued(Records *rs, MessageOpen *o, PyObject *key, PyObject *event_type)
{
    PyObject *event = o->event, *kind = PyTuple_GET_ITEM(event, ev[EV_KIND]);
    PyObject *ip = PyTuple_GET_ITEM(event, ev[EV_IP]);
    double now = PyFloat_AsDouble(PyTuple_GET_ITEM(event, ev[EV_TIME]));
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    PyObject *msg, *result = NULL;
    int kept, opened;
    if (record_step(rs, kind, key, now, &msg, &kept, &opened) < 0)
        goto done;
    if (!kept) {  /* a retry of a message already counted */
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (PyUnicode_Compare(kind, str_submission) == 0) {
        result = Py_NewRef(event);
        goto done;
    }
    if (PyUnicode_Compare(kind, str_queued) == 0) {
        /* the envelope's failures (`<rcpt>... User unknown`) came before it: release them */
        if (opened && ip != Py_None && unrecorded(o->correlator, event, key, 0) < 0)
            goto done;
        PyObject *sender = PyObject_GetAttr(msg, str_sender);
        if (sender == NULL)
            goto done;
        int rc = sender == Py_None ? PyObject_SetAttr(msg, str_sender, PyTuple_GET_ITEM(event, ev[EV_SENDER])) : 0;
        Py_DECREF(sender);
        if (rc < 0)
            goto done;
    }
    if (msg == NULL) {
        int held = unrecorded(o->correlator, event, key, ip == Py_None);
        if (held >= 0)
            result = Py_NewRef(held ? Py_None : event);
        goto done;
    }
    result = filled(event, msg, event_type);
done:
    Py_XDECREF(msg);
    return result;
}

/* Correlator.process for the events of one line (Pipeline.correlated): the kept events, with
 * user, uid, ip and sender filled from the message's record. _remember_session, unrecorded()
 * and the Message class stay in Python, called from here. */
static PyObject *
correlate(PyObject *module, PyObject *args)
{
    PyObject *correlator, *events, *header, *message_type, *event_type;
    if (!PyArg_ParseTuple(args, "OO!O!OO", &correlator, &PyList_Type, &events, &PyTuple_Type, &header,
                          &message_type, &event_type) || configured() < 0)
        return NULL;
    if (PyTuple_GET_SIZE(header) != 5 || !PyType_Check(event_type)) {
        PyErr_SetString(PyExc_TypeError, "correlate() needs a Header and the Event type");
        return NULL;
    }
    PyObject *messages = PyObject_GetAttr(correlator, str_messages);
    if (messages == NULL)
        return NULL;
    if (!PyDict_Check(messages)) {
        Py_DECREF(messages);
        PyErr_SetString(PyExc_TypeError, "Correlator.messages must be a dict");
        return NULL;
    }
    MessageOpen o = {correlator, message_type, header, NULL};
    Records rs = {&MESSAGE_RECORDS, messages, correlator, 0.0, -1, 0, open_message, &o};
    PyObject *out = PyList_New(0);
    if (out == NULL)
        goto error;
    for (Py_ssize_t e = 0; e < PyList_GET_SIZE(events); e++) {
        PyObject *event = PyList_GET_ITEM(events, e);
        if (!PyTuple_Check(event) || PyTuple_GET_SIZE(event) != event_fields) {
            PyErr_SetString(PyExc_TypeError, "not an Event (of the shape configure() was given)");
            goto error;
        }
        PyObject *qid = PyTuple_GET_ITEM(event, ev[EV_QUEUE_ID]);
        if (qid == Py_None) {
            if (PyUnicode_Compare(PyTuple_GET_ITEM(event, ev[EV_KIND]), str_submission) == 0 &&
                PyTuple_GET_ITEM(event, ev[EV_USER]) != Py_None) {
                PyObject *r = PyObject_CallMethodObjArgs(correlator, str_remember, event, header, NULL);
                if (r == NULL)
                    goto error;
                Py_DECREF(r);
            }
            if (PyErr_Occurred() || PyList_Append(out, event) < 0)
                goto error;
            continue;
        }
        PyObject *key = PyTuple_Pack(2, PyTuple_GET_ITEM(header, 1), qid);
        if (key == NULL)
            goto error;
        o.event = event;
        PyObject *kept = process_queued(&rs, &o, key, event_type);
        Py_DECREF(key);
        int rc = kept == NULL ? -1 : kept == Py_None ? 0 : PyList_Append(out, kept);
        Py_XDECREF(kept);
        if (rc < 0)
            goto error;
    }
    Py_DECREF(messages);
    if (add_dropped(correlator, rs.dropped) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;

error:
    Py_XDECREF(out);
    Py_DECREF(messages);
    return NULL;
}

/* --- seen ----------------------------------------------------------------------------------- */

/* replay's tally of the keys the logs show: for each event (a tuple), for each (field index,
 * set): str(event[index]) into the set unless it is None or the set holds `cap` keys. */
static PyObject *
seen(PyObject *module, PyObject *args)
{
    PyObject *events, *fields;
    Py_ssize_t cap;
    if (!PyArg_ParseTuple(args, "O!O!n", &PyList_Type, &events, &PyTuple_Type, &fields, &cap))
        return NULL;
    Py_ssize_t nfields = PyTuple_GET_SIZE(fields);
    for (Py_ssize_t e = 0; e < PyList_GET_SIZE(events); e++) {
        PyObject *event = PyList_GET_ITEM(events, e);
        if (!PyTuple_Check(event)) {
            PyErr_SetString(PyExc_TypeError, "events must be tuples");
            return NULL;
        }
        for (Py_ssize_t f = 0; f < nfields; f++) {
            PyObject *pair = PyTuple_GET_ITEM(fields, f);
            Py_ssize_t index = PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 0));
            PyObject *store = PyTuple_GET_ITEM(pair, 1);
            if (index < 0 || index >= PyTuple_GET_SIZE(event) || !PySet_Check(store)) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_IndexError, "seen(): bad field");
                return NULL;
            }
            PyObject *value = PyTuple_GET_ITEM(event, index);
            if (value == Py_None || PySet_GET_SIZE(store) >= cap)
                continue;
            PyObject *text = PyUnicode_CheckExact(value) ? Py_NewRef(value) : PyObject_Str(value);
            int rc = text == NULL ? -1 : PySet_Add(store, text);
            Py_XDECREF(text);
            if (rc < 0)
                return NULL;
        }
    }
    Py_RETURN_NONE;
}

/* configure(Event._fields): the position of each field this module reads or builds (see ev[]).
 * Refuses a record that lacks one of them (ValueError): mailban.speedups then runs Python only. */
static PyObject *
configure(PyObject *module, PyObject *fields)
{
    if (!PyTuple_Check(fields) || PyTuple_GET_SIZE(fields) > MAX_event_fields) {
        PyErr_SetString(PyExc_TypeError, "configure(Event._fields): a tuple of at most 32 names");
        return NULL;
    }
    Py_ssize_t found[EV_NAMES];
    for (int k = 0; k < EV_NAMES; k++) {
        found[k] = -1;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(fields); i++) {
            PyObject *name = PyTuple_GET_ITEM(fields, i);
            if (PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, ev_names[k]) == 0)
                found[k] = i;
        }
        if (found[k] < 0)
            return PyErr_Format(PyExc_ValueError, "the Event has no field %s", ev_names[k]);
    }
    memcpy(ev, found, sizeof ev);
    event_fields = PyTuple_GET_SIZE(fields);
    Py_RETURN_NONE;
}

/* literals_found(index, rules, line) -> bits: literals_in for the tests, which compare it with
 * filters.holds(literal, line) for every rule. */
static PyObject *
literals_found(PyObject *module, PyObject *args)
{
    PyObject *rules;
    Py_buffer index, line;
    if (!PyArg_ParseTuple(args, "y*O!y*", &index, &PyTuple_Type, &rules, &line))
        return NULL;
    PyObject *res = NULL;
    if (index.len != INDEX_SIZE || PyTuple_GET_SIZE(rules) > INDEX_WIDTH) {
        PyErr_SetString(PyExc_ValueError, "not a literal index of at most 64 rules");
    } else {
        for (Py_ssize_t r = 0; r < PyTuple_GET_SIZE(rules); r++) {
            PyObject *rule = PyTuple_GET_ITEM(rules, r);
            PyObject *literal = PyTuple_Check(rule) && PyTuple_GET_SIZE(rule) >= 1 ? PyTuple_GET_ITEM(rule, 0) : NULL;
            int ok = literal != NULL && (PyBytes_Check(literal) || PyTuple_Check(literal));
            for (Py_ssize_t k = 0; ok && PyTuple_Check(literal) && k < PyTuple_GET_SIZE(literal); k++)
                ok = PyBytes_Check(PyTuple_GET_ITEM(literal, k));
            if (!ok) {
                PyErr_SetString(PyExc_TypeError, "rules must be (literal, ...) tuples, a literal bytes or a tuple of bytes");
                goto done;
            }
        }
        res = PyLong_FromUnsignedLongLong(literals_in(index.buf, rules, line.buf, line.len));
    }
done:
    PyBuffer_Release(&index);
    PyBuffer_Release(&line);
    return res;
}

/* shape_found(shape, line, pos) -> (start, end) of the queue id, or None: shape_match for the
 * tests, which compare it with the rule's regex. */
static PyObject *
shape_found(PyObject *module, PyObject *args)
{
    PyObject *shape;
    Py_buffer line;
    Py_ssize_t pos, qa, qb;
    if (!PyArg_ParseTuple(args, "O!y*n", &PyBytes_Type, &shape, &line, &pos))
        return NULL;
    PyObject *res = NULL;
    if (valid_shape(shape) && ((const unsigned char *)PyBytes_AS_STRING(shape))[1] >= 3) {
        /* an arrival shape: {group: span} ((-1, -1): not taking part), None, or False when the
         * regex decides */
        Found m = {NULL, line.buf, 0, 0, -1, -1, -1, -1, -1, -1};
        int got = pos < 0 || pos > line.len ? 0
                : arrival_match(((const unsigned char *)PyBytes_AS_STRING(shape))[1], line.buf, line.len, pos, &m);
        if (got == ARRIVAL_REGEX)
            res = Py_NewRef(Py_False);
        else if (got == 0)
            res = Py_NewRef(Py_None);
        else
            res = Py_BuildValue("{s(nn)s(nn)s(nn)s(nn)}", "qid", m.qa, m.qb, "sender", m.sa, m.sb, "ip", m.ia,
                                m.ib, "user", m.ua, m.ub);
    } else if (!PyErr_Occurred()) {
        if (pos >= 0 && pos <= line.len &&
            shape_match((const unsigned char *)PyBytes_AS_STRING(shape), line.buf, line.len, pos, &qa, &qb))
            res = Py_BuildValue("(nn)", qa, qb);
        else
            res = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&line);
    return res;
}

static PyMethodDef methods[] = {
    {"parse_header", (PyCFunction)(void (*)(void))parse_header, METH_FASTCALL,
     "parse_header(cache, fallback, header_type, line): SyslogParser.parse's common case."},
    {"tally", tally, METH_VARARGS,
     "tally(lines, lineno, ctx, per_rule, per_ip, first, pending, same, failure_stems): scan.tally_lines' loop."},
    {"match_lines", match_lines, METH_VARARGS,
     "match_lines(lines, lineno, ctx, source, all_lines, items[, quiet]) -> (lineno, lines with a header, "
     "time of the last one): FilterSet.match over lines, for replay."},
    {"correlate", correlate, METH_VARARGS,
     "correlate(correlator, events, header, Message, Event): Pipeline.correlated for one line."},
    {"seen", seen, METH_VARARGS,
     "seen(events, ((field index, set), ...), cap): replay's tally of the keys the logs show."},
    {"configure", configure, METH_O,
     "configure(Event._fields): where each Event field sits, for the functions that read or build them."},
    {"literals_found", literals_found, METH_VARARGS,
     "literals_found(index, rules, line) -> bits of the rules whose literal is in the line."},
    {"shape_found", shape_found, METH_VARARGS,
     "shape_found(shape, line, pos) -> (start, end) of the queue id, or None: a rule shape's match."},
    {"merge", merge, METH_VARARGS,
     "merge(pending, fileno, offset, messages, ttl, max_messages, per_rule, per_ip, first): "
     "run_test's queue-id correlation and counting of pending events; returns the records "
     "dropped by the cap."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "mailban.core._speedups",
    .m_doc = "C versions of mailban's two hottest loops (see the file's header).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    str_group = PyUnicode_InternFromString("group");
    int_one = PyLong_FromLong(1);
    str_user = PyUnicode_InternFromString("user");
    str_uid = PyUnicode_InternFromString("uid");
    str_ip = PyUnicode_InternFromString("ip");
    str_sender = PyUnicode_InternFromString("sender");
    str_queued = PyUnicode_InternFromString("queued");
    str_submission = PyUnicode_InternFromString("submission");
    str_removed = PyUnicode_InternFromString("removed");
    str_ttl = PyUnicode_InternFromString("ttl");
    str_max_messages = PyUnicode_InternFromString("max_messages");
    str_dropped = PyUnicode_InternFromString("dropped");
    str_held = PyUnicode_InternFromString("held");
    str_unrecorded = PyUnicode_InternFromString("unrecorded");
    str_auth_failure = PyUnicode_InternFromString("auth-failure");
    str_reject = PyUnicode_InternFromString("reject");
    str_rate_limit = PyUnicode_InternFromString("rate-limit");
    str_protocol = PyUnicode_InternFromString("protocol");
    str_last = PyUnicode_InternFromString("last");
    bytes_exim = PyBytes_FromStringAndSize("exim", 4);
    str_time = PyUnicode_InternFromString("time");
    str_remember = PyUnicode_InternFromString("_remember_session");
    str_messages = PyUnicode_InternFromString("messages");
    str_sessions = PyUnicode_InternFromString("sessions");
    if (!str_user || !str_uid || !str_ip || !str_sender || !str_queued || !str_submission ||
        !str_removed || !str_remember || !str_messages || !str_sessions || !str_ttl ||
        !str_max_messages || !str_dropped || !str_time || !str_held || !str_unrecorded || !str_auth_failure ||
        !str_reject || !str_rate_limit || !str_protocol || !str_last || !bytes_exim)
        return NULL;
    if (str_group == NULL || int_one == NULL)
        return NULL;
    return PyModule_Create(&module);
}
