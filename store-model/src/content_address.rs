//! TODO(helper): content_address
