# Derivations for the end-to-end build scenarios. Builders are the host's shells, made visible
# in the sandbox with `extra-sandbox-paths` (see tests/builds.rs).
let
  system = builtins.currentSystem;
  sh = script: extra: derivation ({
    inherit system;
    name = extra.name or "simple";
    builder = "/usr/bin/sh";
    args = [ "-c" script ];
    PATH = "/usr/bin";
  } // builtins.removeAttrs extra [ "name" ]);
in rec {
  simple = sh "echo hello > $out" { };
  dependent = sh "read x < ${simple}; echo \"$x from ${simple}\" > $out" { name = "dependent"; };
  multi = sh ''
    echo lib > $out
    mkdir $dev
    echo "include for $out" > $dev/inc
  '' { name = "multi"; outputs = [ "out" "dev" ]; };
  fixed = sh "echo fixed > $out" {
    name = "fixed";
    outputHashMode = "flat";
    outputHashAlgo = "sha256";
    outputHash = "sha256-DDBxQY5jVuYUiYyE7QZMqV6IVRvAgRtTS98ZUuza5TQ=";
  };
  fixedRecursive = sh "mkdir $out; echo fixed > $out/f" {
    name = "fixed-recursive";
    outputHashMode = "recursive";
    outputHashAlgo = "sha256";
    outputHash = "sha256-EAYPGzzZJppauAqI3bolptbvpFyr0ZcWvusKih+srYw=";
  };
  wrongHash = sh "echo not what was promised > $out" {
    name = "wrong-hash";
    outputHashMode = "flat";
    outputHashAlgo = "sha256";
    outputHash = "sha256-DDBxQY5jVuYUiYyE7QZMqV6IVRvAgRtTS98ZUuza5TQ=";
  };
  structured = derivation {
    inherit system;
    name = "structured";
    builder = "/usr/bin/bash";
    __structuredAttrs = true;
    words = [ "one" "two" ];
    count = 3;
    PATH = "/usr/bin";
    args = [ "-c" ''
      source .attrs.sh
      echo "${"$"}{words[1]} $count ${"$"}{outputs[out]}" > ${"$"}{outputs[out]}
    '' ];
  };
  passAsFile = sh "cat $bigPath > $out" { name = "pass-as-file"; big = "a large value"; passAsFile = [ "big" ]; };
  environment = sh ''
    for v in HOME PATH TMPDIR NIX_BUILD_TOP NIX_STORE TERM NIX_LOG_FD PWD; do
      eval "echo $v=\$$v"
    done > $out
    echo "uid=$(id -u 2>/dev/null || echo none)" >> $out
  '' { name = "environment"; };
  references = sh "echo ${simple} > $out; echo ${dependent} >> $out" { name = "references"; };
  failing = sh "echo about to fail; echo on stderr >&2; exit 3" { name = "failing"; };
  failing2 = sh "exit 4" { name = "failing-two"; };
  dependsOnFailing = sh "echo ${failing} > $out" { name = "depends-on-failing"; };
  noOutput = sh "echo did nothing" { name = "no-output"; };
  nondeterministic = sh "cat /proc/sys/kernel/random/uuid > $out" { name = "nondeterministic"; };
  sleepy = sh "echo going to sleep; sleep 30; echo woke > $out" { name = "sleepy"; };
  # Output checks: plain variables and structured outputChecks.
  refsAllowed = sh "echo ${simple} > $out" { name = "refs-allowed"; allowedReferences = [ simple ]; };
  refsRefused = sh "echo ${simple} > $out" { name = "refs-refused"; allowedReferences = [ ]; };
  selfRefRefused = sh "echo $out > $out" { name = "self-ref-refused"; allowedReferences = [ ]; };
  selfRefAllowed = sh "echo $out > $out" { name = "self-ref-allowed"; allowedReferences = [ "out" ]; };
  requisitesRefused = sh "echo ${dependent} > $out" { name = "requisites-refused"; disallowedRequisites = [ simple ]; };
  structuredChecks = derivation {
    inherit system;
    name = "structured-checks";
    builder = "/usr/bin/bash";
    __structuredAttrs = true;
    PATH = "/usr/bin";
    outputChecks.out = { allowedReferences = [ ]; };
    args = [ "-c" "source .attrs.sh; echo ${simple} > ${"$"}{outputs[out]}" ];
  };
  structuredTooLarge = derivation {
    inherit system;
    name = "structured-too-large";
    builder = "/usr/bin/bash";
    __structuredAttrs = true;
    PATH = "/usr/bin";
    outputChecks.out = { maxSize = 64; };
    args = [ "-c" "source .attrs.sh; seq 1 1000 > ${"$"}{outputs[out]}" ];
  };
  logged = sh "for i in 1 2 3; do echo line $i; done; echo done > $out" { name = "logged"; };
  # --repair: the outputs' contents are computed, so no other store object holds their lines.
  repairLeaf = sh "echo repair$((40 + 2))leaf > $out" { name = "repair-leaf"; };
  repairTop = sh "echo top$((40 + 2)) of ${repairLeaf} > $out" { name = "repair-top"; };
  repairSource = builtins.toFile "repair-source" "repair43source\n";
  repairUsesSource = sh "tr a-z A-Z < ${repairSource} > $out; echo ${repairSource} >> $out" { name = "repair-uses-source"; };
  # A path the caller added (`REPAIR_ADDED`): no derivation can make it again.
  repairUsesAdded = let added = builtins.storePath (builtins.getEnv "REPAIR_ADDED"); in
    sh "tr a-z A-Z < ${added} > $out; echo ${added} >> $out" { name = "repair-uses-added"; };
}
