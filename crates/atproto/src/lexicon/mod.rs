//! Lexicon schemas and record validation (placeholder while the module is written).
