#!/usr/bin/env bash
# Installs the Debian peers the tests start themselves on loopback; `make test` and `.ci/run` both call it.
# Chromium (browser tests), Orthanc + its DICOMweb plugin (the PACS), PostgreSQL 15, DCMTK (a DICOM sender we did not write),
# dicom3tools (dciodvfy checks the SRs we export).
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v Orthanc >/dev/null 2>&1 || need+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql)
[ -x /usr/bin/storescu ] || need+=(dcmtk)
[ -x /usr/bin/dciodvfy ] || need+=(dicom3tools)
[ "${#need[@]}" -eq 0 ] && exit 0
sudo=""
if [ "$(id -u)" != "0" ]; then
  if ! command -v sudo >/dev/null 2>&1 || ! sudo -n true 2>/dev/null; then
    echo "error[missing_test_peers]: the tests need Debian packages: ${need[*]}" >&2
    echo "run as root: apt-get update && apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  sudo="sudo -n"
fi
echo "installing Debian test peers: ${need[*]}" >&2
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
