# A small nixpkgs-style package set: a stdenv whose `setup` runs nixpkgs' generic phases, and
# GNU hello built with it. The end-to-end suite (tests/hello.rs) builds it with Nix 2.8 and
# 2.34 clients against our daemon and against the real nix-daemon.
#
# Bootstrap tools: there are none in the store. The host's toolchain (gcc, binutils, make, sed,
# grep, tar, gzip, bash, coreutils under /usr) is made visible inside the build sandbox with
# `extra-sandbox-paths = /usr /lib /lib64` in the daemon's configuration, instead of being
# imported into the store: it is hundreds of MB, importing it would dominate any timing of this
# build and duplicate what Debian already installs, and the output paths do not depend on it
# (they are input-addressed), so Nix and package chain give the same paths because both
# builders see the same host paths. See stdenv/default.nix.
#
# `helloUrl`: where fetchurl gets the tarball (the suite serves it on loopback).
{ system ? builtins.currentSystem
, helloUrl ? "http://127.0.0.1:8000/hello-2.10.tar.gz"
}:

rec {
  # Nix's own `builtin:fetchurl`, as nixpkgs' bootstrap uses it: the daemon downloads the file
  # itself and checks it against the fixed hash, so the output path depends only on the name
  # and the hash, not on the URL.
  fetchurl = args: import <nix/fetchurl.nix> args;

  stdenv = import ./stdenv { inherit system; };

  hello = import ./hello.nix {
    inherit stdenv fetchurl;
    url = helloUrl;
  };

  # A second, trivial package (no source): a script that runs hello.
  hello-wrapper = stdenv.mkDerivation {
    pname = "hello-wrapper";
    version = "1.0";
    dontUnpack = true;
    installPhase = ''
      runHook preInstall
      mkdir -p $out/bin
      printf '#!%s\nexec %s/bin/hello "$@"\n' "$SHELL" ${hello} > $out/bin/hello-wrapper
      chmod +x $out/bin/hello-wrapper
      runHook postInstall
    '';
    meta.description = "Runs GNU hello";
  };
}
