//! store-view
