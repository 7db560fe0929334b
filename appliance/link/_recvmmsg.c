/* The egress's receive call in C: recvmmsg(2), many datagrams per system call.
 *
 * UDP GRO lets the kernel hand over a run of same-size datagrams of one flow in one
 * buffer, but a run ends at the first datagram of another size: under a flood of forged
 * datagrams of random sizes every receive returned one datagram, and the receive loop
 * paid a system call and a GIL hand-over per datagram (docs/performance.md). recvmmsg
 * takes up to max_messages buffers (each possibly a GRO run) in one call, with the GIL
 * released once. Linux only, like the rest of the link layer.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "_pymodule.h"

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_GRO
#define UDP_GRO 104 /* linux/udp.h */
#endif
#ifndef SO_RXQ_OVFL
#define SO_RXQ_OVFL 40
#endif
#define CONTROL_SIZE 64 /* CMSG_SPACE(4) twice, rounded up */

typedef struct {
    PyObject_HEAD
    int fd;
    unsigned max_messages;
    size_t message_size;
    uint8_t *buffers;
    struct mmsghdr *headers;
    struct iovec *iovecs;
    uint8_t *controls;
    unsigned long long kernel_drops;
} BatchReceiver;

static int BatchReceiver_init(BatchReceiver *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "max_messages", "message_size", NULL};
    int fd;
    unsigned max_messages = 32;
    Py_ssize_t message_size = 65536;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|In", kwlist, &fd, &max_messages,
                                     &message_size))
        return -1;
    if (max_messages < 1 || max_messages > 1024 || message_size < 1500 ||
        message_size > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "max_messages 1..1024, message_size 1500..1 MiB");
        return -1;
    }
    if (self->buffers) {
        PyErr_SetString(PyExc_RuntimeError, "BatchReceiver is already set up");
        return -1;
    }
    self->fd = fd;
    self->max_messages = max_messages;
    self->message_size = (size_t)message_size;
    self->buffers = malloc((size_t)max_messages * (size_t)message_size);
    self->headers = calloc(max_messages, sizeof(struct mmsghdr));
    self->iovecs = calloc(max_messages, sizeof(struct iovec));
    self->controls = calloc(max_messages, CONTROL_SIZE);
    if (!self->buffers || !self->headers || !self->iovecs || !self->controls) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void BatchReceiver_dealloc(BatchReceiver *self)
{
    free(self->buffers);
    free(self->headers);
    free(self->iovecs);
    free(self->controls);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Append the datagrams of one message (one datagram, or a GRO run cut at its segment
 * size) to out; note the kernel's drop count. */
static int take_message(BatchReceiver *self, unsigned i, PyObject *out)
{
    struct msghdr *m = &self->headers[i].msg_hdr;
    size_t len = self->headers[i].msg_len;
    size_t segment = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
            int seg = 0;
            memcpy(&seg, CMSG_DATA(c), c->cmsg_len >= CMSG_LEN(sizeof(int)) ? sizeof(int)
                                                                               : sizeof(uint16_t));
            segment = seg > 0 ? (size_t)seg : 0;
        } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
            uint32_t drops;
            memcpy(&drops, CMSG_DATA(c), sizeof drops);
            self->kernel_drops = drops;
        }
    }
    const uint8_t *data = self->buffers + (size_t)i * self->message_size;
    if (!segment || segment >= len)
        segment = len ? len : 1;
    for (size_t at = 0; at < len || (len == 0 && at == 0); at += segment) {
        size_t n = len - at < segment ? len - at : segment;
        PyObject *d = PyBytes_FromStringAndSize((const char *)data + at, (Py_ssize_t)n);
        if (!d || PyList_Append(out, d) < 0) {
            Py_XDECREF(d);
            return -1;
        }
        Py_DECREF(d);
        if (len == 0)
            break;
    }
    return 0;
}

PyDoc_STRVAR(receive_doc,
"receive(timeout) -> list[bytes]\n\n"
"The datagrams of up to max_messages messages queued on the socket, in order, from one\n"
"recvmmsg call; GRO runs are cut into their datagrams. With timeout > 0 (seconds) it\n"
"first waits that long for one to arrive; [] if none did.");

static PyObject *BatchReceiver_receive(BatchReceiver *self, PyObject *args)
{
    double timeout = 0.0;
    if (!PyArg_ParseTuple(args, "|d", &timeout))
        return NULL;
    if (!self->buffers) {
        PyErr_SetString(PyExc_RuntimeError, "BatchReceiver is not set up");
        return NULL;
    }
    for (unsigned i = 0; i < self->max_messages; i++) {
        self->iovecs[i] = (struct iovec){self->buffers + (size_t)i * self->message_size,
                                         self->message_size};
        self->headers[i].msg_hdr = (struct msghdr){
            .msg_iov = &self->iovecs[i], .msg_iovlen = 1,
            .msg_control = self->controls + (size_t)i * CONTROL_SIZE,
            .msg_controllen = CONTROL_SIZE};
        self->headers[i].msg_len = 0;
    }
    int got, err = 0;
    Py_BEGIN_ALLOW_THREADS
    if (timeout > 0) {
        struct pollfd p = {.fd = self->fd, .events = POLLIN};
        int ready = poll(&p, 1, (int)(timeout * 1000));
        if (ready < 0)
            err = errno;
    }
    got = err ? -1 : recvmmsg(self->fd, self->headers, self->max_messages, MSG_DONTWAIT, NULL);
    if (got < 0 && !err)
        err = errno;
    Py_END_ALLOW_THREADS
    PyObject *out = PyList_New(0);
    if (!out)
        return NULL;
    if (got < 0) {
        if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)
            return out;
        Py_DECREF(out);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    for (int i = 0; i < got; i++)
        if (take_message(self, (unsigned)i, out) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    return out;
}

static PyObject *BatchReceiver_get_drops(BatchReceiver *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(self->kernel_drops);
}

static PyMethodDef BatchReceiver_methods[] = {
    {"receive", (PyCFunction)BatchReceiver_receive, METH_VARARGS, receive_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef BatchReceiver_getset[] = {
    {"kernel_drops", (getter)BatchReceiver_get_drops, NULL,
     PyDoc_STR("the socket's drop count (SO_RXQ_OVFL) as of the last message"), NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject BatchReceiverType = {
    DDC_TYPE_FIELDS("appliance.link._recvmmsg.BatchReceiver",
                    "BatchReceiver(fd, max_messages=32, message_size=65536): recvmmsg "
                    "on a UDP socket the caller owns (and keeps open).",
                    BatchReceiver, BatchReceiver_init, BatchReceiver_dealloc,
                    BatchReceiver_methods),
    .tp_getset = BatchReceiver_getset,
};

DDC_MODULE_DEF(recvmmsg_module, "appliance.link._recvmmsg",
               "recvmmsg for the egress's link socket.", NULL);

PyMODINIT_FUNC PyInit__recvmmsg(void)
{
    return ddc_module_create(&recvmmsg_module, &BatchReceiverType, "BatchReceiver");
}
