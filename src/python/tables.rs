//! Offset tables for CPython 3.8-3.12.
