//! store-db
