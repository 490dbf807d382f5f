// Cosine top-k, the same arithmetic as Retrieval.kt: float64 sums in index order, best first,
// equal scores keep the lower index first.

function norm(v) {
  let s = 0;
  for (let j = 0; j < v.length; j++) s += v[j] * v[j];
  return Math.max(Math.sqrt(s), 1e-12);
}

/** query: Float32Array(dim); gallery: Float32Array(count * dim) -> [{index, score}] */
export function topK(query, gallery, dim, k) {
  if (query.length !== dim) throw new Error(`the query has ${query.length} values, the gallery ${dim}`);
  const qn = norm(query);
  const hits = [];
  for (let i = 0; i < gallery.length / dim; i++) {
    const row = gallery.subarray(i * dim, (i + 1) * dim);
    let dot = 0;
    for (let j = 0; j < dim; j++) dot += query[j] * row[j];
    hits.push({ index: i, score: dot / (qn * norm(row)) });
  }
  hits.sort((a, b) => b.score - a.score || a.index - b.index);
  return hits.slice(0, k);
}
