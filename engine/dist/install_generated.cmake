# Runs at install time (install(SCRIPT)), after engine/dist/CMakeLists.txt set
# AMI_DIST_DIR, AMI_GEN_DIR and the relative install folders. Makes the files
# that name absolute paths for the prefix being installed to, and installs
# them with file(INSTALL), which honours DESTDIR.
set(prefix "${CMAKE_INSTALL_PREFIX}")
# Configuration lives in /etc for a system install, as GNUInstallDirs says.
if(prefix STREQUAL "/usr")
  set(sysconfdir "/etc")
else()
  set(sysconfdir "${prefix}/etc")
endif()
set(AMI_PREFIX "${prefix}")
set(AMI_FULL_BINDIR "${prefix}/${AMI_BINDIR}")
set(AMI_FULL_DOCDIR "${prefix}/${AMI_DOCDIR}")
set(AMI_CONF_DIR "${sysconfdir}/ami-engine")

# One folder per destination: two installs may run at once (the tests).
string(MD5 dest_hash "$ENV{DESTDIR}|${prefix}")
set(gen "${AMI_GEN_DIR}/${dest_hash}")
configure_file("${AMI_DIST_DIR}/ami-engine.pc.in" "${gen}/ami-engine.pc" @ONLY)
configure_file("${AMI_DIST_DIR}/ami-engine.service.in" "${gen}/ami-engine.service" @ONLY)

file(INSTALL "${gen}/ami-engine.pc" DESTINATION "${prefix}/${AMI_LIBDIR}/pkgconfig")
file(INSTALL "${gen}/ami-engine.service" DESTINATION "${prefix}/lib/systemd/system")
file(INSTALL "${AMI_DIST_DIR}/engine.lua" DESTINATION "${AMI_CONF_DIR}")
# The service runs every *.lua of this folder; it starts empty.
file(MAKE_DIRECTORY "$ENV{DESTDIR}${AMI_CONF_DIR}/scripts")
