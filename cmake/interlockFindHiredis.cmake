# Finds hiredis for interlock::redis and defines the imported target hiredis::hiredis
# (unless it exists already). Sets interlock_hiredis_FOUND. Used by interlock's own
# build and by the installed package config (only when the `redis` component is
# requested), so consumers resolve hiredis the same way interlock was built.
# Order: an existing hiredis::hiredis target, hiredis's own CMake package (hiredis >= 1.0),
# pkg-config `hiredis`, then find_path/find_library.
set(interlock_hiredis_FOUND FALSE)
if(NOT TARGET hiredis::hiredis)
  find_package(hiredis CONFIG QUIET)
endif()
if(NOT TARGET hiredis::hiredis)
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(INTERLOCK_PC_HIREDIS QUIET IMPORTED_TARGET hiredis)
  endif()
  if(TARGET PkgConfig::INTERLOCK_PC_HIREDIS)
    add_library(hiredis::hiredis INTERFACE IMPORTED)
    set_target_properties(hiredis::hiredis PROPERTIES
      INTERFACE_LINK_LIBRARIES PkgConfig::INTERLOCK_PC_HIREDIS)
  else()
    find_path(INTERLOCK_HIREDIS_INCLUDE_DIR hiredis/hiredis.h)
    find_library(INTERLOCK_HIREDIS_LIBRARY hiredis)
    if(INTERLOCK_HIREDIS_INCLUDE_DIR AND INTERLOCK_HIREDIS_LIBRARY)
      add_library(hiredis::hiredis UNKNOWN IMPORTED)
      set_target_properties(hiredis::hiredis PROPERTIES
        IMPORTED_LOCATION "${INTERLOCK_HIREDIS_LIBRARY}"
        INTERFACE_INCLUDE_DIRECTORIES "${INTERLOCK_HIREDIS_INCLUDE_DIR}")
    endif()
  endif()
endif()
if(TARGET hiredis::hiredis)
  set(interlock_hiredis_FOUND TRUE)
endif()
