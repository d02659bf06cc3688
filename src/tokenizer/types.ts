export interface Tokenizer {
  readonly vocabSize: number;
  readonly bos: number;
  readonly eos: number;
  /** ids that end generation (EOS plus any other end-of-turn ids the model's files name) */
  readonly stopIds: readonly number[];
  /** Encode text. `addBos` defaults to the model's own setting. Special-token strings in the text
   * (e.g. "<|start_story|>") are encoded as their ids only when `parseSpecial` is true. */
  encode(text: string, opts?: { addBos?: boolean; parseSpecial?: boolean }): number[];
  /** Decode ids to text (special tokens skipped unless `keepSpecial`). Leading-space handling follows the model's decoder. */
  decode(ids: readonly number[], opts?: { keepSpecial?: boolean }): string;
  /** A decoder for a stream of ids that never emits a partial UTF-8 character. */
  streamDecoder(opts?: { keepSpecial?: boolean; /** ids already emitted before (the prompt), for leading-space rules */ prefix?: readonly number[] }): StreamDecoder;
  /** the raw piece for an id (for logprobs' token strings) */
  piece(id: number): string;
}

export interface StreamDecoder {
  /** feed one id, get the text that became complete (possibly '') */
  push(id: number): string;
  /** end of stream: any held bytes, replacement characters for an incomplete sequence */
  flush(): string;
}
