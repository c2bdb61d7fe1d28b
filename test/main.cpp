// doctest's main, alone in its own translation unit (doctest compiles its runner here once).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
