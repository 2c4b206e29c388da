build/tests/test_db: tests/unit/test_db.c tests/unit/th.h core/db.h \
 core/util.h
tests/unit/th.h:
core/db.h:
core/util.h:
