/* fuzz_driver.c - runs a fuzz target without libFuzzer: on the files named on the command line,
 * else on a fixed number of inputs from a seeded generator (mutated valid messages and noise),
 * so every build exercises the target under its sanitizers. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t state = 0x9e3779b97f4a7c15ull;

static uint64_t next(void)
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

int main(int argc, char **argv)
{
    static uint8_t buf[4096];
    if (argc > 1) {
        for (int i = 1; i < argc; i++) {
            FILE *f = fopen(argv[i], "rb");
            if (!f) {
                perror(argv[i]);
                return 1;
            }
            size_t n = fread(buf, 1, sizeof(buf), f);
            fclose(f);
            LLVMFuzzerTestOneInput(buf, n);
        }
        return 0;
    }
    /* A valid ModelInferRequest prefix to mutate: model_name "m", id "r", one input tensor. */
    static const uint8_t seed[] = {0x0a, 0x01, 'm', 0x1a, 0x01, 'r', 0x2a, 0x0e, 0x0a, 0x01,
                                   'x', 0x12, 0x04, 'F', 'P', '3', '2', 0x1a, 0x03, 0x01,
                                   0x80, 0x01, 0x3a, 0x04, 0, 0, 0x80, 0x3f};
    for (int iter = 0; iter < 200000; iter++) {
        size_t n;
        if (iter % 2) {
            n = sizeof(seed);
            memcpy(buf, seed, n);
            for (int k = 0; k < 1 + (int)(next() % 4); k++)
                buf[next() % n] = (uint8_t)next();
            n -= next() % 4;
        } else {
            n = next() % 256;
            for (size_t i = 0; i < n; i++)
                buf[i] = (uint8_t)next();
        }
        LLVMFuzzerTestOneInput(buf, n);
    }
    printf("200000 inputs, no crash\n");
    return 0;
}
