/* Cut base64 text into CRLF-terminated lines in one C pass (RFC 2045 §6.8: at most 76 characters a line).
 *
 * Why C: in Python every line is an object (struct.unpack, then b"\r\n".join): ~75 ns a line, ~100 us
 * for an 87 KB layer, 25x what base64 itself costs (pybase64, SIMD), and three layers of every message
 * (docs/performance.md, issue 16 target 3). Here a line is one memcpy and two stores.
 *
 * crlf_lines(text, width) -> bytes: text in lines of width bytes, the last one possibly shorter, every
 * line followed by CRLF; b"" for empty text. Above GIL_FREE_BYTES the copy runs without the GIL, so
 * pool threads encoding large messages wrap their layers in parallel (the input buffer stays exported,
 * so a bytearray cannot be resized meanwhile).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define GIL_FREE_BYTES (256 * 1024)

static void
wrap(char *out, const char *in, Py_ssize_t size, Py_ssize_t width)
{
    while (size > width) {
        memcpy(out, in, (size_t)width);
        out[width] = '\r';
        out[width + 1] = '\n';
        out += width + 2;
        in += width;
        size -= width;
    }
    memcpy(out, in, (size_t)size);
    out[size] = '\r';
    out[size + 1] = '\n';
}

static PyObject *
crlf_lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "crlf_lines(text, width) takes exactly 2 arguments");
        return NULL;
    }
    Py_ssize_t width = PyLong_AsSsize_t(args[1]);
    if (width == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (width < 1) {
        PyErr_SetString(PyExc_ValueError, "width must be at least 1");
        return NULL;
    }
    Py_buffer text;
    if (PyObject_GetBuffer(args[0], &text, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    if (text.len == 0) {
        result = PyBytes_FromStringAndSize(NULL, 0);
        goto done;
    }
    Py_ssize_t lines = (text.len - 1) / width + 1;
    if (lines > (PY_SSIZE_T_MAX - text.len) / 2) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, text.len + 2 * lines);
    if (result == NULL) {
        goto done;
    }
    char *out = PyBytes_AS_STRING(result);
    if (text.len >= GIL_FREE_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        wrap(out, (const char *)text.buf, text.len, width);
        Py_END_ALLOW_THREADS
    }
    else {
        wrap(out, (const char *)text.buf, text.len, width);
    }
done:
    PyBuffer_Release(&text);
    return result;
}

static PyMethodDef methods[] = {
    {"crlf_lines", (PyCFunction)(void (*)(void))crlf_lines, METH_FASTCALL,
     "crlf_lines(text, width) -> bytes: text cut into width-byte lines, each followed by CRLF."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef_Slot slots[] = {
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "worker.smime._crlf",
    .m_doc = "Base64 text cut into CRLF lines in C (RFC 2045 6.8); see _crlf.c for why.",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__crlf(void)
{
    return PyModuleDef_Init(&module_def);
}
