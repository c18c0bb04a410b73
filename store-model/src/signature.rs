//! TODO(helper): signature
