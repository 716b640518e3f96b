/* Gradient buckets (runtime/grad_buckets.h): the order the backward pass
 * finishes the gradients in, the bound on a bucket's bytes, the ready point. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "runtime/grad_buckets.h"

static void test_order_and_bound(void **state)
{
    (void)state;
    /* parameter:        0    1   2    3   4   5 */
    const int ready[] = {40, 10, 10, 30, -1, 20};
    const int64_t bytes[] = {100, 60, 50, 100, 8, 30};
    edm_grad_buckets b;
    edm_status st;
    edm_status_init(&st);
    assert_int_equal(edm_grad_buckets_make(ready, bytes, 6, 120, &b, &st), 0);
    /* by ready point, ties in parameter order: 4 (before the run), 1, 2 (both at 10), 5, 3, 0 */
    const int order[] = {4, 1, 2, 5, 3, 0};
    for (int i = 0; i < 6; i++)
        assert_int_equal(b.order[i], order[i]);
    /* packed up to 120 bytes: {4, 1, 2} = 118, {5} (30 + 100 > 120), {3}, {0} */
    assert_int_equal(b.n, 4);
    const int first[] = {0, 3, 4, 5}, count[] = {3, 1, 1, 1}, at[] = {10, 20, 30, 40};
    const int64_t size[] = {118, 30, 100, 100};
    for (int k = 0; k < 4; k++) {
        assert_int_equal(b.bucket[k].first, first[k]);
        assert_int_equal(b.bucket[k].count, count[k]);
        assert_int_equal(b.bucket[k].ready, at[k]); /* its last member's */
        assert_int_equal(b.bucket[k].bytes, size[k]);
    }
    edm_grad_buckets_free(&b);
}

static void test_larger_than_bound(void **state)
{
    (void)state;
    const int ready[] = {5, 6, 7};
    const int64_t bytes[] = {10, 1000, 10};
    edm_grad_buckets b;
    edm_status st;
    edm_status_init(&st);
    assert_int_equal(edm_grad_buckets_make(ready, bytes, 3, 100, &b, &st), 0);
    /* a parameter larger than the bound is a bucket of its own; nothing joins it */
    assert_int_equal(b.n, 3);
    assert_int_equal(b.bucket[1].bytes, 1000);
    assert_int_equal(b.bucket[1].ready, 6);
    edm_grad_buckets_free(&b);
    /* one bound above the total: one bucket, ready after the last gradient */
    assert_int_equal(edm_grad_buckets_make(ready, bytes, 3, 1 << 20, &b, &st), 0);
    assert_int_equal(b.n, 1);
    assert_int_equal(b.bucket[0].ready, 7);
    assert_int_equal(b.bucket[0].count, 3);
    edm_grad_buckets_free(&b);
    /* no parameters: no buckets */
    assert_int_equal(edm_grad_buckets_make(ready, bytes, 0, 100, &b, &st), 0);
    assert_int_equal(b.n, 0);
    edm_grad_buckets_free(&b);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    const int ready[] = {3, -2};
    const int64_t bytes[] = {4, 4};
    edm_grad_buckets b;
    edm_status st;
    edm_status_init(&st);
    assert_int_equal(edm_grad_buckets_make(ready, bytes, 1, 0, &b, &st), -1);
    assert_non_null(strstr(st.msg, "bound of 0 bytes"));
    edm_status_init(&st);
    assert_int_equal(edm_grad_buckets_make(ready, bytes, 2, 100, &b, &st), -1);
    assert_non_null(strstr(st.msg, "parameter 1 ready at -2"));
    edm_grad_buckets_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_bound),
        cmocka_unit_test(test_larger_than_bound),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
