/* The scans of the filters' value rules (filters.py), in C: their cost per 1 KB record
 * (docs/filters.md, "Cost"; the bar: 1 us). Python's `in` scans about 0.45 ns a byte,
 * glibc's memmem about a third of that; json.loads cost 3-4 us.
 *
 * contains(value, needle) -> bool: memmem.
 *
 * The value of one field of a JSON document, found without building the document:
 * json_field(value, path) reads the whole document once and answers as json.loads(value)
 * followed by value[path[0]][path[1]]... would, for UTF-8 input:
 *   bytes  the raw JSON text of the field's value (the last of duplicate keys, as a dict
 *          keeps it), when the whole document is valid JSON;
 *   None   the document is not valid JSON (as json.loads would raise ValueError), or its
 *          top level is not an object, or the path is not there;
 *   True   this scanner cannot tell the same answer cheaply: a key on the path written
 *          with escapes, nesting deeper than MAX_DEPTH (json.loads may raise
 *          RecursionError there), a number long enough to meet Python's int digit limit,
 *          or bytes that json.loads would decode as UTF-16/32 or with a BOM. The caller
 *          parses with json.loads then.
 * "Valid" is Python's json: NaN, Infinity and -Infinity are accepted, control
 * characters in strings are not (strict), and the bytes are decoded as UTF-8 with
 * surrogatepass (an encoded lone surrogate is accepted). tests/unit/test_scan.py holds
 * it against json.loads on generated, mutated and random documents.
 */
#define _GNU_SOURCE /* memmem */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_pymodule.h"

#define MAX_DEPTH 200
/* sys.set_int_max_str_digits cannot go below 640: a longer number might be refused. */
#define MAX_NUMBER_CHARS 640
#define MAX_PATH 16

enum { SCAN_OK = 0, SCAN_INVALID = -1, SCAN_UNSURE = -2 };

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} Scan;

typedef struct {
    const uint8_t *const *names;
    const Py_ssize_t *lengths;
    Py_ssize_t count;
} Path;

/* Bytes a string may hold as they are: printable ASCII but '"' and '\\'. */
static uint8_t plain[256];

static void init_tables(void)
{
    for (int c = 0x20; c < 0x80; c++)
        plain[c] = c != '"' && c != '\\';
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Whether any of 8 bytes is '"', '\\', below 0x20 or above 0x7F (exact as to whether,
 * not which): a string's plain run is skipped a word at a time. */
static inline int special8(const uint8_t *p)
{
    uint64_t x, q, b;
    memcpy(&x, p, 8);
    q = x ^ (ONES * '"');
    b = x ^ (ONES * '\\');
    return ((((q - ONES) & ~q) | ((b - ONES) & ~b) | ((x - ONES * 0x20) & ~x) | x) & HIGHS) != 0;
}

static inline void skip_ws(Scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static inline int hex(uint8_t c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

static inline int continuation(const Scan *s, Py_ssize_t at)
{
    return s->p + at < s->end && (s->p[at] & 0xC0) == 0x80;
}

/* A UTF-8 sequence at s->p (its lead byte >= 0x80), as Python decodes it with
 * surrogatepass: ED A0..BF (an encoded surrogate) is accepted. */
static int utf8(Scan *s)
{
    uint8_t c = s->p[0];
    Py_ssize_t more;
    if (c < 0xC2)
        return SCAN_INVALID;
    if (c < 0xE0)
        more = 1;
    else if (c < 0xF0)
        more = 2;
    else if (c < 0xF5)
        more = 3;
    else
        return SCAN_INVALID;
    for (Py_ssize_t i = 1; i <= more; i++)
        if (!continuation(s, i))
            return SCAN_INVALID;
    uint8_t c1 = s->p[1];
    if ((c == 0xE0 && c1 < 0xA0) || (c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 > 0x8F))
        return SCAN_INVALID; /* overlong, or past U+10FFFF */
    s->p += more + 1;
    return SCAN_OK;
}

/* A string at s->p (on its opening quote); *escaped says whether it held an escape. */
static int string(Scan *s, int *escaped)
{
    s->p++;
    for (;;) {
        while (s->end - s->p >= 8 && !special8(s->p))
            s->p += 8;
        while (s->p < s->end && plain[*s->p])
            s->p++;
        if (s->p >= s->end)
            return SCAN_INVALID;
        uint8_t c = *s->p;
        if (c == '"') {
            s->p++;
            return SCAN_OK;
        }
        if (c == '\\') {
            *escaped = 1;
            if (s->end - s->p < 2)
                return SCAN_INVALID;
            uint8_t e = s->p[1];
            if (e == 'u') {
                if (s->end - s->p < 6 || !hex(s->p[2]) || !hex(s->p[3]) || !hex(s->p[4]) ||
                    !hex(s->p[5]))
                    return SCAN_INVALID;
                s->p += 6;
            } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' ||
                       e == 'n' || e == 'r' || e == 't') {
                s->p += 2;
            } else {
                return SCAN_INVALID;
            }
        } else if (c < 0x20) {
            return SCAN_INVALID; /* a control character: json's strict mode refuses it */
        } else if (utf8(s) != SCAN_OK) {
            return SCAN_INVALID;
        }
    }
}

static inline int at_digit(const Scan *s)
{
    return s->p < s->end && *s->p >= '0' && *s->p <= '9';
}

static int literal(Scan *s, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return SCAN_INVALID;
    s->p += n;
    return SCAN_OK;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?, or -Infinity. */
static int number(Scan *s)
{
    const uint8_t *start = s->p;
    if (*s->p == '-') {
        s->p++;
        if (s->p < s->end && *s->p == 'I')
            return literal(s, "Infinity");
    }
    if (!at_digit(s))
        return SCAN_INVALID;
    if (*s->p == '0')
        s->p++;
    else
        while (at_digit(s))
            s->p++;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (!at_digit(s))
            return SCAN_INVALID;
        while (at_digit(s))
            s->p++;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (!at_digit(s))
            return SCAN_INVALID;
        while (at_digit(s))
            s->p++;
    }
    return s->p - start > MAX_NUMBER_CHARS ? SCAN_UNSURE : SCAN_OK;
}

static int value(Scan *s, int depth, Path path, const uint8_t **found, const uint8_t **found_end);

/* At an object's or array's opening byte: 0 if it is empty (and now closed), 1 if a
 * member follows. */
static int opens_members(Scan *s, uint8_t closer)
{
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == closer) {
        s->p++;
        return 0;
    }
    return 1;
}

/* After a member: 1 at a ',' (another member follows), SCAN_OK at the closer. */
static int after_member(Scan *s, uint8_t closer)
{
    skip_ws(s);
    if (s->p < s->end && *s->p == ',') {
        s->p++;
        skip_ws(s);
        return 1;
    }
    if (s->p < s->end && *s->p == closer) {
        s->p++;
        return SCAN_OK;
    }
    return SCAN_INVALID;
}

/* An object at s->p; with a path, the last member named path[0] is followed. */
static int object(Scan *s, int depth, Path path, const uint8_t **found,
                  const uint8_t **found_end)
{
    if (!opens_members(s, '}'))
        return SCAN_OK;
    Path none = {NULL, NULL, 0};
    Path rest = none;
    if (path.count > 0)
        rest = (Path){path.names + 1, path.lengths + 1, path.count - 1};
    for (;;) {
        if (s->p >= s->end || *s->p != '"')
            return SCAN_INVALID;
        const uint8_t *key = s->p + 1;
        int escaped = 0, r = string(s, &escaped);
        if (r != SCAN_OK)
            return r;
        Py_ssize_t key_length = s->p - 1 - key;
        skip_ws(s);
        if (s->p >= s->end || *s->p != ':')
            return SCAN_INVALID;
        s->p++;
        skip_ws(s);
        int wanted = 0;
        if (path.count > 0) {
            if (escaped)
                return SCAN_UNSURE; /* the key may be path[0] written with escapes */
            wanted = key_length == path.lengths[0] &&
                     memcmp(key, path.names[0], (size_t)key_length) == 0;
        }
        if (!wanted || path.count == 1) {
            const uint8_t *start = s->p, *unused, *unused_end;
            r = value(s, depth + 1, none, &unused, &unused_end);
            if (wanted) { /* the field itself: its text, the last duplicate's */
                *found = start;
                *found_end = s->p;
            }
        } else {
            /* A later duplicate replaces an earlier one, with or without the rest. */
            *found = *found_end = NULL;
            r = value(s, depth + 1, rest, found, found_end);
        }
        if (r != SCAN_OK || (r = after_member(s, '}')) != 1)
            return r;
    }
}

static int array(Scan *s, int depth)
{
    Path none = {NULL, NULL, 0};
    const uint8_t *unused, *unused_end;
    if (!opens_members(s, ']'))
        return SCAN_OK;
    for (;;) {
        int r = value(s, depth + 1, none, &unused, &unused_end);
        if (r != SCAN_OK || (r = after_member(s, ']')) != 1)
            return r;
    }
}

static int value(Scan *s, int depth, Path path, const uint8_t **found, const uint8_t **found_end)
{
    if (depth > MAX_DEPTH)
        return SCAN_UNSURE;
    if (s->p >= s->end)
        return SCAN_INVALID;
    int escaped = 0;
    switch (*s->p) {
    case '{':
        return object(s, depth, path, found, found_end);
    case '[':
        return array(s, depth);
    case '"':
        return string(s, &escaped);
    case 'n':
        return literal(s, "null");
    case 't':
        return literal(s, "true");
    case 'f':
        return literal(s, "false");
    case 'N':
        return literal(s, "NaN");
    case 'I':
        return literal(s, "Infinity");
    default:
        if (*s->p == '-' || (*s->p >= '0' && *s->p <= '9'))
            return number(s);
        return SCAN_INVALID;
    }
}

PyDoc_STRVAR(contains_doc,
"contains(value, needle) -> bool: whether needle occurs in value (memmem).");

static PyObject *py_contains(PyObject *self, PyObject *args)
{
    Py_buffer hay, needle;
    if (!PyArg_ParseTuple(args, "y*y*", &hay, &needle))
        return NULL;
    int found = needle.len == 0 || memmem(hay.buf, (size_t)hay.len, needle.buf,
                                          (size_t)needle.len) != NULL;
    PyBuffer_Release(&hay);
    PyBuffer_Release(&needle);
    return PyBool_FromLong(found);
}

PyDoc_STRVAR(field_doc,
"json_field(value, path) -> bytes | None | True\n\n"
"The raw JSON text of value's field at path (a tuple of UTF-8 names), None if value\n"
"is not valid JSON or has no such field, True if only json.loads can tell.");

static PyObject *py_field(PyObject *self, PyObject *args)
{
    Py_buffer doc;
    PyObject *names;
    if (!PyArg_ParseTuple(args, "y*O!", &doc, &PyTuple_Type, &names))
        return NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(names);
    const uint8_t *name_bytes[MAX_PATH];
    Py_ssize_t name_lengths[MAX_PATH];
    if (count < 1 || count > MAX_PATH) {
        PyBuffer_Release(&doc);
        PyErr_Format(PyExc_ValueError, "path: 1 to %d names", MAX_PATH);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        if (!PyBytes_Check(name)) {
            PyBuffer_Release(&doc);
            PyErr_SetString(PyExc_TypeError, "path: a tuple of bytes");
            return NULL;
        }
        name_bytes[i] = (const uint8_t *)PyBytes_AS_STRING(name);
        name_lengths[i] = PyBytes_GET_SIZE(name);
    }
    const uint8_t *start = doc.buf;
    Py_ssize_t length = doc.len;
    int r;
    const uint8_t *found = NULL, *found_end = NULL;
    /* json.loads takes a NUL in the first four bytes for UTF-16/32, and a leading BOM
     * for its encoding: not this scanner's UTF-8. */
    if (length > 0 && (memchr(start, 0, length < 4 ? (size_t)length : 4) != NULL ||
                       start[0] == 0xEF || start[0] == 0xFE || start[0] == 0xFF)) {
        r = SCAN_UNSURE;
    } else {
        Scan s = {start, start + length};
        Path path = {name_bytes, name_lengths, count};
        skip_ws(&s);
        if (s.p >= s.end || *s.p != '{') {
            r = SCAN_INVALID; /* valid or not, no field: the answer is None either way */
        } else {
            int release = length > (1 << 16); /* the GIL's hand-over costs more below */
            PyThreadState *saved = release ? PyEval_SaveThread() : NULL;
            r = value(&s, 0, path, &found, &found_end);
            if (r == SCAN_OK) {
                skip_ws(&s);
                if (s.p != s.end)
                    r = SCAN_INVALID;
            }
            if (release)
                PyEval_RestoreThread(saved);
        }
    }
    PyObject *out;
    if (r == SCAN_UNSURE)
        out = Py_NewRef(Py_True);
    else if (r != SCAN_OK || found == NULL)
        out = Py_NewRef(Py_None);
    else
        out = PyBytes_FromStringAndSize((const char *)found, found_end - found);
    PyBuffer_Release(&doc);
    return out;
}

static PyMethodDef methods[] = {
    {"contains", py_contains, METH_VARARGS, contains_doc},
    {"json_field", py_field, METH_VARARGS, field_doc},
    {NULL, NULL, 0, NULL},
};

DDC_MODULE_DEF(scan_module, "appliance._scan",
               "The filters' value scans: memmem, a JSON field without a parse.", methods);

PyMODINIT_FUNC PyInit__scan(void)
{
    init_tables();
    return ddc_module_create(&scan_module, NULL, NULL);
}
