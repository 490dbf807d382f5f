package com.mobile_distill.core

/** One gallery hit: its index in the gallery and its cosine similarity to the query. */
data class Hit(val index: Int, val score: Double)

object Retrieval {
    /**
     * Cosine similarity of `query` to every gallery row, accumulated in double in index order
     * (the Python golden files compute it the same way), best first; equal scores keep the
     * lower index first.
     */
    fun topK(query: FloatArray, gallery: Array<FloatArray>, k: Int): List<Hit> {
        val qn = norm(query)
        val hits = gallery.mapIndexed { i, g ->
            require(g.size == query.size) { "gallery row $i has ${g.size} values, the query ${query.size}" }
            var dot = 0.0
            for (j in query.indices) dot += query[j].toDouble() * g[j].toDouble()
            Hit(i, dot / (qn * norm(g)))
        }
        return hits.sortedWith(compareByDescending<Hit> { it.score }.thenBy { it.index }).take(k)
    }

    private fun norm(v: FloatArray): Double {
        var s = 0.0
        for (x in v) s += x.toDouble() * x.toDouble()
        return maxOf(Math.sqrt(s), 1e-12)
    }
}
