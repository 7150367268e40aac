//! Thread classification.
