//! TODO(helper): references
