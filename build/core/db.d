build/core/db.o: core/db.c core/db.h core/migrations.h core/util.h
core/db.h:
core/migrations.h:
core/util.h:
