set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_vision_load_row6.png.tmp.25775'
$m << EOD
0.101494 0.116912 0.144049 0.167555 0.082284 0.0963695 0.158387 0.13295
0.0933364 0.135662 0.131618 0.142417 0.107353 0.183111 0.115028 0.0914752
EOD
set title "Attention-Aware V-MoE (paper's literal τ/σ): load (last\nepoch, first seed)"
set xlabel "expert"
set ylabel "MoE layer"
set grid
set key outside right top
unset grid
set palette rgb 33,13,10
set cblabel 'share of routed pairs'
set xtics 1
set ytics 1
plot $m matrix with image notitle
