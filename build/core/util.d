build/core/util.o: core/util.c core/util.h
core/util.h:
