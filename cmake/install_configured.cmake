# shmq_install_configured(TEMPLATE DESTINATION COMPONENT [NAME name]): installs TEMPLATE
# (a configure_file @VAR@ template, its name without ".in") to DESTINATION, substituted at
# install time rather than at configure time, so that the paths written into it are those
# of the prefix actually installed to: `cmake --install --prefix P` gives P, cpack (which
# installs with prefix /usr into its staging dir through DESTDIR) gives /usr.
#
# DESTINATION is relative to the install prefix, or absolute; it is evaluated at install time
# (write "\${SHMQ_UNITDIR}"). At install time the template and DESTINATION see SHMQ_PREFIX, SHMQ_BINDIR, SHMQ_LIBDIR, SHMQ_INCLUDEDIR, all absolute;
# SHMQ_SYSCONFDIR (/etc for the prefix /usr, as GNUInstallDirs has it, else PREFIX/etc);
# SHMQ_UNITDIR (/lib/systemd/system for the prefix /usr, where Debian 12 installs units,
# else PREFIX/lib/systemd/system, which systemd also reads for /usr/local); PROJECT_VERSION,
# PROJECT_DESCRIPTION, and CMAKE_INSTALL_LIBDIR and CMAKE_INSTALL_INCLUDEDIR as configured
# (relative to the prefix).
function(shmq_install_configured template destination component)
  get_filename_component(name "${template}" NAME)
  string(REGEX REPLACE "\\.in$" "" name "${name}")
  install(CODE "
    # One file per destination: installs to other prefixes may run at the same time (the
    # install and package tests), and must not copy each other's.
    string(MD5 key \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}\")
    set(out \"${CMAKE_BINARY_DIR}/install-configured/\${key}/${name}\")
    set(SHMQ_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
    if(SHMQ_PREFIX STREQUAL \"/usr\")
      set(SHMQ_SYSCONFDIR /etc)
      set(SHMQ_UNITDIR /lib/systemd/system)
    else()
      set(SHMQ_SYSCONFDIR \"\${SHMQ_PREFIX}/${CMAKE_INSTALL_SYSCONFDIR}\")
      set(SHMQ_UNITDIR \"\${SHMQ_PREFIX}/lib/systemd/system\")
    endif()
    set(SHMQ_BINDIR \"\${SHMQ_PREFIX}/${CMAKE_INSTALL_BINDIR}\")
    set(SHMQ_LIBDIR \"\${SHMQ_PREFIX}/${CMAKE_INSTALL_LIBDIR}\")
    set(SHMQ_INCLUDEDIR \"\${SHMQ_PREFIX}/${CMAKE_INSTALL_INCLUDEDIR}\")
    set(CMAKE_INSTALL_LIBDIR \"${CMAKE_INSTALL_LIBDIR}\")
    set(CMAKE_INSTALL_INCLUDEDIR \"${CMAKE_INSTALL_INCLUDEDIR}\")
    set(PROJECT_VERSION \"${PROJECT_VERSION}\")
    set(PROJECT_DESCRIPTION \"${PROJECT_DESCRIPTION}\")
    configure_file(\"${template}\" \"\${out}\" @ONLY)
    set(dest \"${destination}\")
    if(NOT IS_ABSOLUTE \"\${dest}\")
      set(dest \"\${SHMQ_PREFIX}/\${dest}\")
    endif()
    file(INSTALL DESTINATION \"\${dest}\" TYPE FILE FILES \"\${out}\")
  " COMPONENT ${component})
endfunction()
