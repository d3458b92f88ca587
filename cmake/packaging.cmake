# Debian packages, built by CPack from this build dir: `cpack -G DEB` (tests/package_test.sh).
#   libshmq      the shared library, libshmq.so.0.1 (component "runtime")
#   libshmq-dev  headers, libshmq.a, the libshmq.so link, CMake config, shmq.pc ("dev")
#   shmq-tools   shmqd, shmqctl, the systemd unit, /etc/default/shmqd, manual pages ("tools")
# CPack installs each component with the prefix /usr (CPACK_PACKAGING_INSTALL_PREFIX), through
# DESTDIR into its staging dir: the unit, its defaults file and shmq.pc are written at install
# time for that prefix (cmake/install_configured.cmake), whatever this build was configured
# with. shmq-demo (component "demo") is left out of the packages.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME shmq)
set(CPACK_PACKAGE_VENDOR "shmq")
# Whoever publishes the packages sets this (Maintainer:, and the changelog's signature line).
set(SHMQ_PACKAGE_CONTACT "shmq maintainers <shmq@example.org>" CACHE STRING
  "Maintainer of the Debian packages: Name <address>")
set(CPACK_PACKAGE_CONTACT "${SHMQ_PACKAGE_CONTACT}")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
# Empty: CPack would put it before each package's own synopsis (CPACK_DEBIAN_*_DESCRIPTION).
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL runtime dev tools)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_SOURCE shmq)
# Stripped programs and shared library, as Debian ships them (libshmq.a keeps its symbols).
set(CPACK_STRIP_FILES ON)
# NAME_VERSION-RELEASE_ARCH.deb, as Debian names package files.
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Maintainer scripts and conffiles installed with the modes dpkg expects (0755 scripts,
# 0644 data), whatever the source tree's modes are.
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# Depends: from the ELF files by dpkg-shlibdeps, what the library and tools really link.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(shmq_deb_version "${PROJECT_VERSION}-${CPACK_DEBIAN_PACKAGE_RELEASE}")

set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME libshmq)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION libs)
# Descriptions: the synopsis, then the extended description's lines (CPack indents them).
set(CPACK_DEBIAN_RUNTIME_DESCRIPTION "shmq shared-memory message queue - shared library
shmq is a fault-tolerant message queue for processes on one Linux host.
This package holds libshmq.so, for programs linked with -lshmq.")
# A shlibs file, so that dpkg-shlibdeps finds libshmq for packages linking it: "libshmq
# 0.1 libshmq (= 0.1.0-1)", the exact version while the ABI is 0.x. Only libshmq has a shared
# library, so the setting, which CPack has only for all packages, acts on it alone. The
# ldconfig trigger is ours (tools/debian/libshmq/triggers); CPack also adds postinst and postrm
# scripts that call ldconfig.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY "=")
set(CPACK_DEBIAN_RUNTIME_PACKAGE_CONTROL_EXTRA "${PROJECT_SOURCE_DIR}/tools/debian/libshmq/triggers")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libshmq-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_DEV_DESCRIPTION "shmq shared-memory message queue - development files
shmq is a fault-tolerant message queue for processes on one Linux host.
This package holds the C++ headers, the static library, the CMake package
(find_package(shmq)) and shmq.pc for pkg-config.")
# The static library needs libxxhash at link time (Libs.private, $<LINK_ONLY:xxhash>).
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "libshmq (= ${shmq_deb_version}), libxxhash-dev")

set(CPACK_DEBIAN_TOOLS_PACKAGE_NAME shmq-tools)
set(CPACK_DEBIAN_TOOLS_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_TOOLS_DESCRIPTION "shmq shared-memory message queue - daemon and command-line tool
shmq is a fault-tolerant message queue for processes on one Linux host.
shmqd persists durable queues and runs their watchdog (systemd unit
shmqd.service, settings in /etc/default/shmqd); shmqctl creates, inspects
and operates queues.")
# The tools link libshmq.a (tools/CMakeLists.txt): their library Depends come from
# dpkg-shlibdeps; adduser for the postinst's system user.
set(CPACK_DEBIAN_TOOLS_PACKAGE_DEPENDS "adduser")
set(shmq_tools_control ${PROJECT_SOURCE_DIR}/tools/debian/shmq-tools)
set(CPACK_DEBIAN_TOOLS_PACKAGE_CONTROL_EXTRA
  "${shmq_tools_control}/conffiles;${shmq_tools_control}/postinst;${shmq_tools_control}/prerm;${shmq_tools_control}/postrm")

# /usr/share/doc/PACKAGE/changelog.Debian.gz, which Debian requires of every package: one
# entry for this version, dated with the source's last commit (the same source gives the
# same packages), or when the build was configured outside a git checkout.
execute_process(COMMAND git -C ${PROJECT_SOURCE_DIR} log -1 --format=%cD
  OUTPUT_VARIABLE shmq_changelog_date OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE shmq_git_rc ERROR_QUIET)
if(NOT shmq_git_rc EQUAL 0 OR shmq_changelog_date STREQUAL "")
  string(TIMESTAMP shmq_changelog_date "%a, %d %b %Y %H:%M:%S +0000" UTC)
endif()
string(CONCAT shmq_changelog
  "shmq (${shmq_deb_version}) unstable; urgency=medium\n\n"
  "  * Packages built by CPack from the shmq ${PROJECT_VERSION} source tree\n"
  "    (cmake/packaging.cmake).\n\n"
  " -- ${SHMQ_PACKAGE_CONTACT}  ${shmq_changelog_date}\n")
# Written only when it changes, so that a reconfigure does not rebuild the .gz.
file(CONFIGURE OUTPUT ${CMAKE_BINARY_DIR}/debian/changelog.Debian CONTENT "${shmq_changelog}" @ONLY)
add_custom_command(OUTPUT ${CMAKE_BINARY_DIR}/debian/changelog.Debian.gz
  COMMAND gzip -9nc ${CMAKE_BINARY_DIR}/debian/changelog.Debian > ${CMAKE_BINARY_DIR}/debian/changelog.Debian.gz
  DEPENDS ${CMAKE_BINARY_DIR}/debian/changelog.Debian
  COMMENT "Compressing the Debian changelog")
add_custom_target(shmq_deb_changelog ALL DEPENDS ${CMAKE_BINARY_DIR}/debian/changelog.Debian.gz)
foreach(pair runtime:libshmq dev:libshmq-dev tools:shmq-tools)
  string(REPLACE ":" ";" pair ${pair})
  list(GET pair 0 component)
  list(GET pair 1 package)
  install(FILES ${CMAKE_BINARY_DIR}/debian/changelog.Debian.gz
    DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/${package} COMPONENT ${component})
endforeach()

include(CPack)
