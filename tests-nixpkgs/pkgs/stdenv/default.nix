# The standard environment. Like nixpkgs' stdenv it is a store path holding `setup` (the
# generic builder's phases, setup.sh with its @placeholders@ filled in) plus `mkDerivation`,
# whose derivations run `source $stdenv/setup; genericBuild` with bash.
#
# Its bootstrap tools are the host's: `initialPath` is /usr, made visible inside the sandbox
# by the daemon's `extra-sandbox-paths = /usr /lib /lib64` (on a merged-/usr Debian /bin and
# /lib are symlinks into /usr; /bin itself is not listed because nix-daemon 2.34 binds its own
# /bin/sh). Nix 2.8 and package chain bind no /bin/sh, so nothing here may rely on one:
# builders run /usr/bin/bash and the phases point configure and make at it (see setup.sh).
{ system }:

let
  shell = "/usr/bin/bash";
  initialPath = "/usr";

  setupDrv = derivation {
    name = "stdenv-host";
    inherit system initialPath shell;
    builder = shell;
    setup = ./setup.sh;
    PATH = "${initialPath}/bin";
    args = [ "-c" ''
      set -eu
      mkdir "$out"
      sed -e "s|@initialPath@|$initialPath|g" -e "s|@shell@|$shell|g" "$setup" > "$out/setup"
    '' ];
  };

  defaultBuilder = builtins.toFile "default-builder.sh" ''
    source $stdenv/setup
    genericBuild
  '';

  # `pname` and `version` (or `name`), `src`, the phases and their hooks, flags: as in
  # nixpkgs. `meta` and `passthru` stay out of the derivation's environment and are added to
  # the result (nix-env reads `meta`).
  mkDerivation =
    { name ? "${attrs.pname}-${attrs.version}"
    , meta ? { }
    , passthru ? { }
    , ...
    }@attrs:
    let
      drv = derivation (builtins.removeAttrs attrs [ "meta" "passthru" ] // {
        inherit name system;
        builder = shell;
        args = [ "-e" defaultBuilder ];
        stdenv = setupDrv;
      });
    in
    drv // passthru // { inherit meta; };
in
setupDrv // {
  inherit shell initialPath mkDerivation system;
}
