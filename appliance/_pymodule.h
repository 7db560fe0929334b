/* What the three native modules (protocol/_native.c, link/_recvmmsg.c, _scan.c) declare
 * the same way: a single-phase module (m_size -1: module state is static, the daemons
 * run one interpreter) and its type objects. One home, so a fix to how they are made
 * (or a move to multi-phase init) is made once. Module init only, nothing on a hot path.
 * Include after <Python.h>.
 */
#ifndef DDC_PYMODULE_H
#define DDC_PYMODULE_H

/* static struct PyModuleDef var for module name, with doc and a method table (or NULL). */
#define DDC_MODULE_DEF(var, name, doc, methods) \
    static struct PyModuleDef var = {           \
        PyModuleDef_HEAD_INIT,                  \
        .m_name = (name),                       \
        .m_doc = PyDoc_STR(doc),                \
        .m_size = -1,                           \
        .m_methods = (methods),                 \
    }

/* The fields of a plain type object (not subclassable, no GC: its objects hold no Python
 * references), for a designated initializer that may add more (.tp_getset). */
#define DDC_TYPE_FIELDS(name, doc, object, init, dealloc, methods) \
    PyVarObject_HEAD_INIT(NULL, 0)                                 \
    .tp_name = (name),                                             \
    .tp_doc = PyDoc_STR(doc),                                      \
    .tp_basicsize = sizeof(object),                                \
    .tp_flags = Py_TPFLAGS_DEFAULT,                                \
    .tp_new = PyType_GenericNew,                                   \
    .tp_init = (initproc)(init),                                   \
    .tp_dealloc = (destructor)(dealloc),                           \
    .tp_methods = (methods)

/* The module of def, with type (if not NULL) readied and added as type_name; NULL with
 * an exception set on failure. */
static inline PyObject *ddc_module_create(struct PyModuleDef *def, PyTypeObject *type,
                                          const char *type_name)
{
    if (type != NULL && PyType_Ready(type) < 0)
        return NULL;
    PyObject *m = PyModule_Create(def);
    if (m == NULL || type == NULL)
        return m;
    if (PyModule_AddObjectRef(m, type_name, (PyObject *)type) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

#endif
