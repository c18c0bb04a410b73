# GNU hello, as nixpkgs writes it (pkgs/by-name/he/hello/package.nix), at version 2.10.
{ stdenv, fetchurl, url }:

stdenv.mkDerivation {
  pname = "hello";
  version = "2.10";

  src = fetchurl {
    inherit url;
    sha256 = "31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b";
  };

  doCheck = true;

  meta = {
    description = "A program that produces a familiar, friendly greeting";
    homepage = "https://www.gnu.org/software/hello/manual/";
    license = "GPL-3.0-or-later";
    mainProgram = "hello";
  };
}
