//! Serializers of the protocol's value types, and the value types the store model does not
//! have yet.
//!
//! Types from `pkgchain-store-model` are reused and given their wire encoding here:
//! [`StorePath`](pkgchain_store_model::store_path::StorePath),
//! [`ContentAddress`](pkgchain_store_model::content_address::ContentAddress),
//! [`Signature`](pkgchain_store_model::signature::Signature),
//! [`PathInfo`](pkgchain_store_model::path_info::PathInfo) (Nix's `UnkeyedValidPathInfo`) and
//! [`ValidPathInfo`](pkgchain_store_model::path_info::ValidPathInfo).
//!
//! Defined here (model types that may move to the store model later): [`DerivedPath`],
//! [`OutputsSpec`], [`DrvOutput`], [`Realisation`], [`UnkeyedRealisation`], the legacy
//! realisation forms, [`BuildResult`]; and protocol-only types: [`BuildMode`],
//! [`TrustedFlag`].

pub mod build_mode;
pub mod build_result;
pub mod derived_path;
pub mod legacy;
pub mod path_info;
pub mod realisation;
pub mod store;
pub mod trusted;

pub use build_mode::BuildMode;
pub use build_result::{BuildResult, BuildStatus, BuiltOutput, KeyedBuildResult};
pub use derived_path::{DerivedPath, OutputsSpec, SingleDerivedPath};
pub use legacy::{LegacyDrvOutput, LegacyRealisation, LegacyRealisationJson};
pub use realisation::{DrvOutput, Realisation, UnkeyedRealisation};
pub use trusted::TrustedFlag;
