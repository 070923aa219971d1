/* test_xml.c - the listing reader on real listing shapes (S3 ListObjectsV2 and Error, Azure
 * EnumerationResults), entities, CDATA, nesting, bounds and every malformed construct. */
#include "check.h"
#include "mm/xml.h"

#include <errno.h>

static int text(const char *doc, const char *name, char *out, size_t size)
{
    size_t len = 12345;
    int rc = xml_text(doc, strlen(doc), name, out, size, &len);
    if (rc == 0)
        CHECK_INT(len, strlen(out));
    return rc;
}

struct collect {
    char all[512];
    int n;
    int stop_at;
};

static int collect_key(const struct xml_span *c, void *arg)
{
    struct collect *col = arg;
    char key[64];
    size_t len;
    int rc = xml_text(c->p, c->len, "Key", key, sizeof(key), &len);
    if (rc < 0)
        return rc;
    col->n++;
    strcat(col->all, key);
    strcat(col->all, ";");
    return col->n == col->stop_at ? 7 : 0;
}

static int blob_name(const struct xml_span *c, void *arg)
{
    char name[32];
    int rc = xml_text(c->p, c->len, "Name", name, sizeof(name), NULL);
    if (rc < 0)
        return rc;
    strcat(arg, name);
    strcat(arg, ";");
    return 0;
}

static const char s3_list[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
    "<Name>modelmesh-example-models</Name><Prefix>path/</Prefix><KeyCount>3</KeyCount>"
    "<MaxKeys>3</MaxKeys><IsTruncated>true</IsTruncated>"
    "<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>"
    "<Contents><Key>path/a.bin</Key><LastModified>2009-10-12T17:50:30.000Z</LastModified>"
    "<ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag><Size>434234</Size>"
    "<StorageClass>STANDARD</StorageClass></Contents>"
    "<Contents><Key>path/b &amp; c.txt</Key><ETag>\"x\"</ETag><Size>0</Size></Contents>"
    "<Contents>\n  <Key>path/d/e&#x20AC;&#233;&#65;</Key>\n  <Size>7</Size>\n</Contents>"
    "</ListBucketResult>";

int main(void)
{
    char out[128];

    /* S3 ListObjectsV2: top-level fields, entities, and each Contents in order. */
    CHECK_INT(text(s3_list, "IsTruncated", out, sizeof(out)), 0);
    CHECK_STR(out, "true");
    CHECK_INT(text(s3_list, "NextContinuationToken", out, sizeof(out)), 0);
    CHECK_STR(out, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
    CHECK_INT(text(s3_list, "ETag", out, sizeof(out)), 0); /* the first one, at depth 2 */
    CHECK_STR(out, "\"fba9dede5f27731c9771645a39863328\"");
    CHECK_INT(text(s3_list, "ContinuationToken", out, sizeof(out)), -ENOENT);
    CHECK_INT(text(s3_list, "Content", out, sizeof(out)), -ENOENT); /* a name is exact */
    CHECK_INT(text(s3_list, "key", out, sizeof(out)), -ENOENT);     /* and case-sensitive */
    struct collect col = {.stop_at = -1};
    CHECK_INT(xml_each(s3_list, strlen(s3_list), "Contents", collect_key, &col), 0);
    CHECK_INT(col.n, 3);
    CHECK_STR(col.all, "path/a.bin;path/b & c.txt;path/d/e\xe2\x82\xac\xc3\xa9" "A;");
    /* A callback's non-zero stops the walk and is returned. */
    struct collect stop = {.stop_at = 2};
    CHECK_INT(xml_each(s3_list, strlen(s3_list), "Contents", collect_key, &stop), 7);
    CHECK_INT(stop.n, 2);
    /* None is fine. */
    struct collect none = {.stop_at = -1};
    CHECK_INT(xml_each(s3_list, strlen(s3_list), "Blob", collect_key, &none), 0);
    CHECK_INT(none.n, 0);

    /* S3 Error body. */
    const char *s3_err = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code>"
                         "<Message>The specified key does not exist.</Message>"
                         "<Key>a/b</Key><RequestId>4442587FB7D0A2F9</RequestId></Error>";
    CHECK_INT(text(s3_err, "Code", out, sizeof(out)), 0);
    CHECK_STR(out, "NoSuchKey");
    CHECK_INT(text(s3_err, "Message", out, sizeof(out)), 0);
    CHECK_STR(out, "The specified key does not exist.");

    /* Azure List Blobs (with the BOM it sends): a document with attributes, empty elements, a nested Blob
     * name, NextMarker empty at the end. */
    const char *az = "\xef\xbb\xbf<?xml version=\"1.0\" encoding=\"utf-8\"?>"
                     "<EnumerationResults ServiceEndpoint=\"http://127.0.0.1/a>b\" "
                     "ContainerName='c'><Prefix>p/</Prefix><MaxResults>2</MaxResults><Blobs>"
                     "<Blob><Name>p/x</Name><Properties><Content-Length>5</Content-Length>"
                     "<Content-MD5>XUFAKrxLKna5cZ2REBfFkg==</Content-MD5></Properties>"
                     "<Metadata /></Blob>"
                     "<Blob><Name>p/y</Name><Properties><Content-MD5/></Properties></Blob>"
                     "</Blobs><NextMarker /></EnumerationResults>";
    CHECK_INT(text(az, "Content-MD5", out, sizeof(out)), 0);
    CHECK_STR(out, "XUFAKrxLKna5cZ2REBfFkg==");
    CHECK_INT(text(az, "NextMarker", out, sizeof(out)), 0);
    CHECK_STR(out, "");
    CHECK_INT(text(az, "Metadata", out, sizeof(out)), 0);
    CHECK_STR(out, "");
    char names[64] = "";
    CHECK_INT(xml_each(az, strlen(az), "Blob", blob_name, names), 0);
    CHECK_STR(names, "p/x;p/y;");

    /* <a></a> is empty; child tags dropped, their text kept; CDATA kept raw; comments and
     * instructions dropped. */
    CHECK_INT(text("<a></a>", "a", out, sizeof(out)), 0);
    CHECK_STR(out, "");
    CHECK_INT(text("<r><a>x<b>y</b>z<!-- <a>no</a> --><?pi <a>?><![CDATA[<&amp;>]]></a></r>", "a",
                   out, sizeof(out)),
              0);
    CHECK_STR(out, "xyz<&amp;>");
    /* An element nested in one of the same name: the outer one's text, the inner not visited
     * separately by xml_each. */
    CHECK_INT(text("<a>1<a>2</a>3</a>", "a", out, sizeof(out)), 0);
    CHECK_STR(out, "123");
    struct collect nest = {.stop_at = -1};
    CHECK_INT(xml_each("<r><Contents><Key>k</Key><Contents><Key>in</Key></Contents></Contents>"
                       "<Contents><Key>k2</Key></Contents></r>",
                       strlen("<r><Contents><Key>k</Key><Contents><Key>in</Key></Contents>"
                              "</Contents><Contents><Key>k2</Key></Contents></r>"),
                       "Contents", collect_key, &nest),
              0);
    CHECK_STR(nest.all, "k;k2;");
    /* A name with a prefix is the whole name. */
    CHECK_INT(text("<s:a>1</s:a><a>2</a>", "a", out, sizeof(out)), 0);
    CHECK_STR(out, "2");
    CHECK_INT(text("<s:a>1</s:a>", "s:a", out, sizeof(out)), 0);
    CHECK_STR(out, "1");
    /* End tags may carry spaces before '>'. */
    CHECK_INT(text("<a >v</a >", "a", out, sizeof(out)), 0);
    CHECK_STR(out, "v");

    /* Character references: every UTF-8 length, decimal and hex, leading zeros. */
    CHECK_INT(text("<a>&#65;&#x41;&#x0041;&#xe9;&#x20AC;&#x1F600;&#x10FFFF;</a>", "a", out,
                   sizeof(out)),
              0);
    CHECK_STR(out, "AAA\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf");
    CHECK_INT(text("<a>&lt;&gt;&amp;&quot;&apos;</a>", "a", out, sizeof(out)), 0);
    CHECK_STR(out, "<>&\"'");

    /* Bounds: exactly size - 1 fits, one more is -E2BIG; size 0 is -E2BIG. */
    CHECK_INT(text("<a>abcd</a>", "a", out, 5), 0);
    CHECK_STR(out, "abcd");
    CHECK_INT(text("<a>abcde</a>", "a", out, 5), -E2BIG);
    CHECK_INT(text("<a>&#x20AC;</a>", "a", out, 3), -E2BIG);
    CHECK_INT(text("<a>&#x20AC;</a>", "a", out, 4), 0);
    CHECK_INT(text("<a></a>", "a", out, 0), -E2BIG);
    CHECK_INT(text("<a></a>", "a", out, 1), 0);
    /* len may be NULL. */
    CHECK_INT(xml_text("<a>q</a>", 8, "a", out, sizeof(out), NULL), 0);
    CHECK_STR(out, "q");
    /* The length bounds the document: nothing past it is read (the bytes after are valid
     * XML that would close the element). */
    CHECK_INT(xml_text("<a>q</a>", 6, "a", out, sizeof(out), NULL), -EINVAL);
    CHECK_INT(xml_text("<a>q</a><b>z</b>", 8, "b", out, sizeof(out), NULL), -ENOENT);
    /* A NUL inside is a byte like any other for finding. */
    CHECK_INT(xml_text("<a>x\0y</a>", 10, "a", out, sizeof(out), NULL), 0);
    CHECK(memcmp(out, "x\0y", 4) == 0);

    /* Malformed: each gives -EINVAL from both functions, and xml_each calls nothing. */
    static const char *const bad[] = {
        "<a>x",                  /* no end tag */
        "<a>x</b>",              /* the element's end tag has another name */
        "<a>x</a></a>",          /* an end tag too many */
        "<a",                    /* unterminated start tag */
        "<a x=\">\"",            /* unterminated, '>' quoted */
        "<a x=\"y></a>",         /* unterminated quote */
        "<a></a",                /* unterminated end tag */
        "</>",                   /* empty end tag name */
        "<>x</>",                /* empty name */
        "<a></a x>",             /* an end tag with an attribute */
        "<a><!-- x </a>",        /* unterminated comment */
        "<a><![CDATA[x</a>",     /* unterminated CDATA */
        "<a><?x </a>",           /* unterminated instruction */
        "<!DOCTYPE a><a/>",      /* a DTD */
        "<a>&amp</a>",           /* unterminated entity */
        "<a>& x;</a>",           /* unknown entity */
        "<a>&nbsp;</a>",         /* unknown entity (HTML's) */
        "<a>&;</a>",             /* empty entity */
        "<a>&#;</a>",            /* empty reference */
        "<a>&#x;</a>",           /* empty hex reference */
        "<a>&#0;</a>",           /* NUL */
        "<a>&#xD800;</a>",       /* a surrogate */
        "<a>&#x110000;</a>",     /* beyond Unicode */
        "<a>&#99999999999;</a>", /* overflow */
        "<a>&#12a;</a>",         /* not decimal */
        "<a>&#xG;</a>",          /* not hex */
        "<a><b</a>",             /* '<' in a tag */
        "<b/><a>&bogus;</a>",    /* an error after the element of interest is found... */
        "<a>1</a><c>&bad;</c>",  /* ...or after it: the whole document is checked */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct collect c = {.stop_at = -1};
        int rc = text(bad[i], "a", out, sizeof(out));
        if (rc != -EINVAL)
            fprintf(stderr, "bad[%zu] %s: %d\n", i, bad[i], rc);
        CHECK_INT(rc, -EINVAL);
        CHECK_INT(xml_each(bad[i], strlen(bad[i]), "a", collect_key, &c), -EINVAL);
        CHECK_INT(c.n, 0);
    }
    /* An empty document has no element. */
    CHECK_INT(xml_text("", 0, "a", out, sizeof(out), NULL), -ENOENT);
    CHECK_INT(xml_each("", 0, "a", collect_key, &none), 0);
    return CHECK_DONE();
}
