/* stubs.c: temporary, handlers not written yet. */
#include "tasks.h"
#define STUB(f) int f(bf_req_t *r) { return bf_req_fail(r, BF_E_UNAVAILABLE, NULL, "not yet"); }



STUB(survey_record) STUB(assessment_run) STUB(assessment_get)

