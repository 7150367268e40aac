//! Layouts for 3.13+ from `_Py_DebugOffsets`.
