//! Line numbers from code objects line tables.
