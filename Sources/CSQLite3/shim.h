#ifndef COFFER_CSQLITE3_SHIM_H
#define COFFER_CSQLITE3_SHIM_H

// SQLite 3 (Debian's libsqlite3-dev: 3.40 on bookworm; RETURNING needs 3.35, the extended
// result codes at open 3.37). One copy of SQLite in the process: the writer and the readers
// of a database file must share its in-process locking state.

#include <sqlite3.h>

#endif
