build/gen/migrations.o: build/gen/migrations.c core/migrations.h
core/migrations.h:
